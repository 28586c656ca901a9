"""A synthetic regression task: targets from a fixed random teacher network plus noise."""

from __future__ import annotations

import torch

__all__ = ["TeacherRegression"]


class TeacherRegression:
    """``y = teacher(x) + noise`` with ``x ~ N(0, I)``; the teacher is a random 2-layer tanh net.

    Everything is generated from ``seed``: the teacher, the ``n_train`` training and ``n_val``
    validation points. A small ``n_train`` with noise gives an overfitting regime (weight decay
    matters); targets are normalised to unit variance, so the loss of predicting 0 is about 1.

    Example:
        >>> data = TeacherRegression(d_in=8, n_train=64, n_val=32)
        >>> x, y = data.batch(16, torch.Generator().manual_seed(0))
        >>> x.shape, y.shape
        (torch.Size([16, 8]), torch.Size([16, 1]))
    """

    def __init__(
        self,
        d_in: int = 16,
        d_out: int = 1,
        *,
        n_train: int = 8192,
        n_val: int = 2048,
        teacher_width: int = 64,
        noise: float = 0.1,
        seed: int = 0,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        w1 = torch.randn(d_in, teacher_width, generator=g) / d_in**0.5
        w2 = torch.randn(teacher_width, d_out, generator=g) / teacher_width**0.5

        def teacher(x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(2.0 * x @ w1) @ w2

        x = torch.randn(n_train + n_val, d_in, generator=g)
        clean = teacher(x)
        scale = clean.std().clamp_min(1e-8)
        y = clean / scale + noise * torch.randn(clean.shape, generator=g)
        self.d_in, self.d_out, self.noise = d_in, d_out, noise
        self.train_x, self.train_y = x[:n_train], y[:n_train]
        self.val_x, self.val_y = x[n_train:], y[n_train:]

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.train_x.shape[0], (batch_size,), generator=generator)
        return self.train_x[idx], self.train_y[idx]

    def val_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.val_x, self.val_y

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(output.float(), target)
