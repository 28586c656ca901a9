"""A generated image task with a tunable augmentation strength: procedurally drawn glyphs.

:class:`GlyphImages`: ``classes`` glyph classes, each a fixed random set of strokes (line segments
in the unit square); every image draws its class's strokes after a random rotation, scale, shift
and stroke jitter, with a soft stroke profile and Gaussian pixel noise, on a ``size × size`` grid.
Held-out images vary the same way, so a small training set (a few hundred images) is memorised by
a CNN and the right amount of augmentation (random rotation, scale and shift of the training
images) pays off on the validation split. Everything is generated from ``seed`` (no download).

:func:`augment_images` is the augmentation, scaled by one **strength** ``s``: rotation up to
``s · 30°``, scale within ``1 ± s · 0.15``, shift up to ``s · 0.2`` of the half-width, drawn per
image (``s`` may be a tensor with one strength per image); ``s = 0`` returns the input unchanged.
It is the data-side hyperparameter ``augment`` of the STN tuner (``StnTuner(augment=...)``) and of
fixed-hyperparameter runs (``train_fixed(task, {"augment": s})`` trains on
:meth:`GlyphImages.with_augment`).

Example:
    >>> data = GlyphImages(n_train=20, n_val=10, n_test=10)
    >>> x, y = data.train_set()
    >>> x.shape, int(y.max()) < data.classes
    (torch.Size([20, 1, 16, 16]), True)
    >>> bool((augment_images(x, 0.0) == x).all())
    True
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GlyphCNN", "GlyphImages", "augment_images", "glyph_cnn"]

#: what strength 1 means: the largest rotation (radians), relative scale change and shift
#: (a fraction of the half-width, as ``affine_grid`` counts it)
MAX_ROTATION = math.pi / 6
MAX_SCALE = 0.15
MAX_SHIFT = 0.2


def augment_images(
    x: torch.Tensor, strength: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random rotation, scale and shift of each image of ``x`` (``N × C × H × W``), scaled by
    ``strength`` (a number, or a tensor of ``N`` strengths); bilinear, zero outside the image.

    Draws ``4 N`` uniform numbers from ``generator`` (None: torch's global generator), except
    for a numeric strength of 0, which returns ``x`` itself and draws nothing.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_images needs N x C x H x W images, got shape {tuple(x.shape)}")
    if not isinstance(strength, torch.Tensor):
        if strength == 0:
            return x
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"augmentation strength must be a finite number >= 0, got {strength!r}")
    n = x.shape[0]
    r = torch.rand((n, 4), generator=generator).to(x.device) * 2.0 - 1.0
    s = strength.reshape(-1).to(x.device, x.dtype) if isinstance(strength, torch.Tensor) else strength
    angle = r[:, 0] * (MAX_ROTATION * s)
    scale = 1.0 + r[:, 1] * (MAX_SCALE * s)
    tx, ty = r[:, 2] * (MAX_SHIFT * s), r[:, 3] * (MAX_SHIFT * s)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _render(segments: torch.Tensor, thickness: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``N × size × size`` of soft strokes: ``segments`` ``N × K × 2 × 2`` (end points in
    [-1, 1]²), ``thickness`` ``N`` (stroke width in the same units)."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    py, px = torch.meshgrid(c, c, indexing="ij")
    p = torch.stack([px, py], dim=-1).reshape(1, 1, -1, 2)  # 1 × 1 × P × 2
    a, b = segments[:, :, None, 0], segments[:, :, None, 1]  # N × K × 1 × 2
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-8)).clamp(0.0, 1.0)
    d2 = (p - a - t[..., None] * ab).pow(2).sum(-1).amin(dim=1)  # N × P
    img = torch.exp(-d2 / thickness[:, None].pow(2))
    return img.reshape(-1, size, size)


class GlyphImages:
    """Procedurally drawn glyphs (see the module docstring): splits as tensors ``N × 1 × size × size``.

    Args:
        classes: number of glyph classes, each ``strokes`` random line segments.
        size: image side in pixels.
        n_train, n_val, n_test: images per split (classes drawn uniformly).
        variation: scale of the natural per-image variation (rotation up to ``variation · 30°``,
            scale ``1 ± variation · 0.15``, shift up to ``variation · 0.2``, end-point jitter
            ``variation · 0.08``): what augmentation can teach a model trained on few images.
        noise: std of the Gaussian pixel noise.
        seed: seeds the prototypes and every image.
        augment_strength: the strength :meth:`augment` applies to training batches (0: none).
    """

    loss_name = "cross_entropy"

    def __init__(
        self,
        classes: int = 10,
        size: int = 16,
        *,
        n_train: int = 300,
        n_val: int = 1000,
        n_test: int = 2000,
        strokes: int = 3,
        variation: float = 1.0,
        noise: float = 0.15,
        seed: int = 0,
        augment_strength: float = 0.0,
    ) -> None:
        if n_train < 1 or n_val < 1 or n_test < 0:
            raise ValueError(f"need n_train >= 1, n_val >= 1, n_test >= 0; got {n_train}, {n_val}, {n_test}")
        if classes < 2 or size < 4 or strokes < 1:
            raise ValueError(f"need classes >= 2, size >= 4, strokes >= 1; got {classes}, {size}, {strokes}")
        if not augment_strength >= 0:
            raise ValueError(f"augment_strength must be >= 0, got {augment_strength!r}")
        g = torch.Generator().manual_seed(seed)
        proto = (torch.rand(classes, strokes, 2, 2, generator=g) * 2.0 - 1.0) * 0.6
        n = n_train + n_val + n_test
        y = torch.randint(0, classes, (n,), generator=g)
        seg = proto[y] + variation * 0.08 * torch.randn(n, strokes, 2, 2, generator=g)
        r = torch.rand(n, 4, generator=g) * 2.0 - 1.0
        angle = r[:, 0] * MAX_ROTATION * variation
        scale = 1.0 + r[:, 1] * MAX_SCALE * variation
        rot = torch.stack(
            [
                torch.stack([torch.cos(angle), -torch.sin(angle)], 1),
                torch.stack([torch.sin(angle), torch.cos(angle)], 1),
            ],
            dim=1,
        )  # N × 2 × 2
        shift = r[:, 2:] * MAX_SHIFT * variation
        seg = torch.einsum("nij,nksj->nksi", rot * scale[:, None, None], seg) + shift[:, None, None, :]
        thickness = (0.09 + 0.03 * torch.rand(n, generator=g)) * 2.0 * 8.0 / size
        x = _render(seg, thickness, size) + noise * torch.randn(n, size, size, generator=g)
        x = x.unsqueeze(1)
        a, b = n_train, n_train + n_val
        self.classes, self.size, self.d_out = classes, size, classes
        self.augment_strength = float(augment_strength)
        self.train_x, self.train_y = x[:a], y[:a]
        self.val_x, self.val_y = x[a:b], y[a:b]
        self.test_x, self.test_y = x[b:], y[b:]

    def batch(self, batch_size: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` training images drawn with replacement."""
        idx = torch.randint(0, self.train_x.shape[0], (batch_size,), generator=generator)
        return self.train_x[idx], self.train_y[idx]

    def train_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_x, self.train_y

    def val_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.val_x, self.val_y

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.test_x, self.test_y

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(output.float(), target, label_smoothing=label_smoothing)

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loop's hook: :func:`augment_images` at :attr:`augment_strength`."""
        return augment_images(x, self.augment_strength, generator), y

    @staticmethod
    def augment_with(x: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        """:func:`augment_images` on torch's global generator: the STN tuner's ``augment``."""
        return augment_images(x, strength)

    def with_augment(self, strength: float) -> GlyphImages:
        """A copy (sharing the image tensors) whose training batches are augmented at ``strength``."""
        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
            raise ValueError(f"augment must be a finite number >= 0, got {strength!r}")
        out = copy.copy(self)
        out.augment_strength = float(strength)
        return out


class GlyphCNN(nn.Module):
    """A small CNN for :class:`GlyphImages`: two 3×3 conv blocks (``width`` and ``2·width``
    channels, ReLU, 2×2 max-pool), dropout, a hidden Linear of ``4·width`` units, the readout.

    Example:
        >>> GlyphCNN(8)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 16, classes: int = 10, size: int = 16, p: float = 0.0) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"GlyphCNN needs an image size divisible by 4, got {size}")
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 2 * width * (size // 4) ** 2
        self.head = nn.Sequential(
            nn.Dropout(p), nn.Linear(flat, 4 * width), nn.ReLU(), nn.Dropout(p), nn.Linear(4 * width, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def glyph_cnn(
    width: int, plan: Any = None, *, classes: int = 10, size: int = 16, p: float = 0.0
) -> nn.Module:
    """Model builder of :class:`GlyphCNN` (the registry's ``model(width, plan, **kwargs)``)."""
    return GlyphCNN(width, classes=classes, size=size, p=p)
