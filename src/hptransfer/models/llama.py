"""A small LLaMA-style decoder: RMSNorm, SwiGLU, rotary embeddings; fits on one screen.

Heads have a fixed size ``head_dim``, so the head count grows with width. The attention logits
are multiplied by ``attention_scale`` (muP: ``plan.attention_scale`` ∝ 1/d_head), else by the
usual ``1/sqrt(head_dim)``. Each residual branch is multiplied by ``residual_multiplier``
(``plan.residual_multiplier``: ``(depth/base_depth)**-alpha`` under CompleteP or depth-muP,
1 without a depth rule); the torch adapter reads it from the blocks and checks it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "Block", "SwiGLU", "TinyLlama"]


def _rope_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)  # (T, hd/2)
    return angles.cos(), angles.sin()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., 2i], x[..., 2i+1]) of ``x`` (B, H, T, hd) by position angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary embeddings."""

    cos: torch.Tensor  # rotary tables (non-persistent buffers)
    sin: torch.Tensor

    def __init__(self, width: int, head_dim: int, seq_len: int, attention_scale: float | None) -> None:
        super().__init__()
        if width % head_dim:
            raise ValueError(f"width {width} is not divisible by head_dim {head_dim}")
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
        self.n_heads, self.head_dim = width // head_dim, head_dim
        self.scale = attention_scale if attention_scale is not None else 1.0 / math.sqrt(head_dim)
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width, bias=False)
        self.o = nn.Linear(width, width, bias=False)
        cos, sin = _rope_tables(seq_len, head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q, self.k, self.v)
        )
        cos, sin = self.cos[:t], self.sin[:t]
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o(y.transpose(1, 2).reshape(b, t, c))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with hidden size ``mlp_ratio * width``."""

    def __init__(self, width: int, mlp_ratio: float = 8 / 3) -> None:
        super().__init__()
        hidden = max(1, round(mlp_ratio * width))
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: ``x + r * attn(norm(x))``, then ``x + r * mlp(norm(x))`` with
    ``r = residual_multiplier`` (1: the usual block)."""

    def __init__(
        self,
        width: int,
        head_dim: int,
        seq_len: int,
        attention_scale: float | None,
        mlp_ratio: float,
        residual_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.residual_multiplier = float(residual_multiplier)
        self.attn_norm = nn.RMSNorm(width)
        self.attn = Attention(width, head_dim, seq_len, attention_scale)
        self.mlp_norm = nn.RMSNorm(width)
        self.mlp = SwiGLU(width, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.residual_multiplier
        if r == 1.0:
            x = x + self.attn(self.attn_norm(x))
            return x + self.mlp(self.mlp_norm(x))
        x = x + r * self.attn(self.attn_norm(x))
        return x + r * self.mlp(self.mlp_norm(x))


class TinyLlama(nn.Module):
    """LLaMA-style decoder over token ids ``(batch, seq)`` returning logits ``(batch, seq, vocab)``.

    Example:
        >>> import torch
        >>> m = TinyLlama(64, depth=2, head_dim=16, vocab_size=128, seq_len=32)
        >>> m(torch.zeros(2, 32, dtype=torch.long)).shape
        torch.Size([2, 32, 128])
    """

    def __init__(
        self,
        width: int,
        depth: int = 2,
        head_dim: int = 16,
        vocab_size: int = 128,
        seq_len: int = 64,
        attention_scale: float | None = None,
        mlp_ratio: float = 8 / 3,
        residual_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.width, self.depth, self.seq_len, self.vocab_size = width, depth, seq_len, vocab_size
        self.embed = nn.Embedding(vocab_size, width)
        self.blocks = nn.ModuleList(
            Block(width, head_dim, seq_len, attention_scale, mlp_ratio, residual_multiplier)
            for _ in range(depth)
        )
        self.norm = nn.RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.seq_len:
            raise ValueError(f"sequence length {idx.shape[1]} > model seq_len {self.seq_len}")
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))
