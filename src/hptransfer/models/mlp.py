"""A width-parametrised MLP (the reference model of the synthetic regression task)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """``depth`` linear layers of ``width`` units with GELU between them.

    The first layer (fixed fan-in ``d_in``) is vector-like, the middle ones are hidden matrices,
    the last one (fixed fan-out ``d_out``) is the readout: the torch adapter tells these apart
    by comparing with the same model at another width.

    Example:
        >>> import torch
        >>> MLP(64, depth=3, d_in=16, d_out=1)(torch.zeros(8, 16)).shape
        torch.Size([8, 1])
    """

    def __init__(self, width: int, depth: int = 3, d_in: int = 16, d_out: int = 1) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"MLP depth must be >= 2 (input and readout layers), got {depth}")
        self.width, self.depth, self.d_in, self.d_out = width, depth, d_in, d_out
        self.input = nn.Linear(d_in, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 2))
        self.readout = nn.Linear(width, d_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.input(x))
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.readout(h)
