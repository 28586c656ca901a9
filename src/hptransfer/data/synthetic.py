"""Synthetic tasks from a fixed random teacher network: regression and noisy-label classification.

Both hold their splits as tensors (``train_set()``, ``val_set()``, ``test_set()``), so the
training loop can also run them in epochs and the STN tuner can iterate them.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["NoisyClassification", "TeacherRegression"]


class _Splits:
    """Tensor-backed splits: random training batches, the fixed splits, and their sizes."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def batch(self, batch_size: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` training examples drawn with replacement."""
        idx = torch.randint(0, self.train_x.shape[0], (batch_size,), generator=generator)
        return self.train_x[idx], self.train_y[idx]

    def train_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_x, self.train_y

    def val_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.val_x, self.val_y

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.test_x, self.test_y


class TeacherRegression(_Splits):
    """``y = teacher(x) + noise`` with ``x ~ N(0, I)``; the teacher is a random 2-layer tanh net.

    Everything is generated from ``seed``: the teacher, the ``n_train`` training, ``n_val``
    validation and ``n_test`` test points (the test split is the tail of ``n_val + n_test``
    held-out points). A small ``n_train`` with noise gives an overfitting regime (weight decay
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
        n_test: int = 0,
        seed: int = 0,
    ) -> None:
        if n_train < 1 or n_val < 1 or n_test < 0:
            raise ValueError(f"need n_train >= 1, n_val >= 1, n_test >= 0; got {n_train}, {n_val}, {n_test}")
        g = torch.Generator().manual_seed(seed)
        w1 = torch.randn(d_in, teacher_width, generator=g) / d_in**0.5
        w2 = torch.randn(teacher_width, d_out, generator=g) / teacher_width**0.5

        def teacher(x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(2.0 * x @ w1) @ w2

        x = torch.randn(n_train + n_val + n_test, d_in, generator=g)
        clean = teacher(x)
        scale = clean.std().clamp_min(1e-8)
        y = clean / scale + noise * torch.randn(clean.shape, generator=g)
        self.d_in, self.d_out, self.noise = d_in, d_out, noise
        b = n_train + n_val
        self.train_x, self.train_y = x[:n_train], y[:n_train]
        self.val_x, self.val_y = x[n_train:b], y[n_train:b]
        self.test_x, self.test_y = x[b:], y[b:]

    loss_name = "mse"

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.float(), target)


class NoisyClassification(_Splits):
    """Classification with labels sampled from a random teacher's softmax (noisy labels).

    ``x ~ N(0, I)`` with ``d_in`` features; logits ``4 tanh(2 x W1) W2`` over ``classes`` classes;
    each label is one draw from their softmax, so even the teacher cannot reach zero loss and a
    small ``n_train`` is memorised by a wide model (the regime where regularisation matters).
    Everything is generated from ``seed``.

    Example:
        >>> data = NoisyClassification(n_train=64, n_val=32, n_test=32)
        >>> x, y = data.train_set()
        >>> x.shape, y.dtype, int(y.max()) < data.d_out
        (torch.Size([64, 32]), torch.int64, True)
    """

    loss_name = "cross_entropy"

    def __init__(
        self,
        d_in: int = 32,
        classes: int = 10,
        *,
        n_train: int = 256,
        n_val: int = 1024,
        n_test: int = 4096,
        teacher_width: int = 64,
        seed: int = 0,
    ) -> None:
        if n_train < 1 or n_val < 1 or n_test < 0:
            raise ValueError(f"need n_train >= 1, n_val >= 1, n_test >= 0; got {n_train}, {n_val}, {n_test}")
        if classes < 2:
            raise ValueError(f"classes must be >= 2, got {classes}")
        g = torch.Generator().manual_seed(seed)
        w1 = torch.randn(d_in, teacher_width, generator=g) / math.sqrt(d_in)
        w2 = torch.randn(teacher_width, classes, generator=g) / math.sqrt(teacher_width)
        x = torch.randn(n_train + n_val + n_test, d_in, generator=g)
        logits = 4.0 * torch.tanh(2.0 * x @ w1) @ w2
        y = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g).squeeze(1)
        a, b = n_train, n_train + n_val
        self.d_in, self.d_out = d_in, classes
        self.train_x, self.train_y = x[:a], y[:a]
        self.val_x, self.val_y = x[a:b], y[a:b]
        self.test_x, self.test_y = x[b:], y[b:]

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(output.float(), target, label_smoothing=label_smoothing)
