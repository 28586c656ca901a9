"""The spectral condition at one width: each matrix's sigma_max against sqrt(fan_out/fan_in).

Yang, Simon & Bernstein ("A spectral condition for feature learning", arXiv 2310.17813) show
that features learn at every width when each weight matrix and each of its updates has
spectral norm ``Θ(sqrt(fan_out / fan_in))``. :func:`spectral_condition` reports, for every
matrix of one model,

    ``ratio = sigma_max / sqrt(fan_out / fan_in)``,

which is the matrix's RMS-to-RMS operator norm: the most it can scale the root-mean-square
entry of its input. The condition fixes how this scales (Θ(1) in width), not its constant, so
one width cannot prove transfer: that takes the cross-width fit of
:func:`~hptransfer.diagnostics.diagnose`. It is a first look, reported as information and never
changing a verdict.

What counts as *far* (:data:`FAR_FACTOR`): a ratio above 10 or below 1/10, an order of
magnitude. The condition leaves the constant free, and the constants seen in practice stay
well inside that: a semi-orthogonal matrix at the condition's scale has ratio 1, an i.i.d.
Gaussian one ``1 + sqrt(min(fan)/max(fan))`` (the edge of its spectrum, at most 2), and on the
built-in LLaMA proxy trained for 4 AdamW timescales (widths 16 and 64, muP, linear wd) every
hidden matrix and the readout lay between 1.1 and 5.2 (the SwiGLU down projection highest).
Beyond ×10 the matrix is scaled some other way: a fixed-std init at a large width (ratio
∝ sqrt(width)), a zero or ``1/fan_in`` readout still near its init (below: muP's readout
starts small and its updates are meant to dominate), a missing multiplier, or a run far from
the AdamW steady state. Far matrices are worth a look, and a second width tells whether the
gap grows.

Fan-in and fan-out come from the weight's shape and layer type: ``Linear`` / ``Conv*``
weights are ``(fan_out, fan_in, *kernel)`` (fan-in includes the kernel), Hugging Face
``Conv1D`` (GPT-2) and ``ConvTranspose*`` store ``(fan_in, fan_out, …)``. In a bare
``state_dict`` the layer type is unknown and torch's ``(fan_out, fan_in)`` layout is assumed
(load the weights into the model to have ``Conv1D`` read the right way round). Embedding
tables (``Embedding``, or a state_dict matrix named ``embed``/``wte``/…) get no target: their
inputs are one-hot (norm 1, not ``sqrt(fan_in)``), so the condition reads differently there.
The stored weight is measured: a forward multiplier (a mup-style ``1/m`` readout) is not in it.

Example:
    >>> row = condition_row("fc.weight", "Linear", (256, 64), sigma_max=4.0)
    >>> row.fan_in, row.fan_out, row.target, row.ratio, row.far
    (64, 256, 2.0, 2.0, False)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAR_FACTOR",
    "ConditionRow",
    "condition_row",
    "condition_target",
    "fans",
    "is_embedding",
    "spectral_condition",
]

#: A matrix is *far* from the spectral condition when its ratio is above this or below its inverse.
FAR_FACTOR = 10.0

_EMBEDDING_NAME = re.compile(
    r"(^|\.)(embed|embedding|embeddings|wte|wpe|tok_embeddings|tok_emb|pos_emb)(\.|$)"
)
_TRANSPOSED_TYPES = re.compile(r"^(Conv1D|ConvTranspose\dd)$")


def is_embedding(name: str, layer_type: str) -> bool:
    """An embedding table: an ``Embedding``/``EmbeddingBag`` module, or a bare state_dict
    matrix whose name says ``embed``, ``wte``, ``wpe``, ``tok_embeddings``…"""
    if layer_type in ("Embedding", "EmbeddingBag"):
        return True
    return layer_type == "matrix" and bool(_EMBEDDING_NAME.search(name))


def fans(layer_type: str, shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this layer type and shape (see the module docstring).

    Example:
        >>> fans("Linear", (512, 128)), fans("Conv1D", (128, 384)), fans("Conv2d", (64, 32, 3, 3))
        ((128, 512), (128, 384), (288, 64))
    """
    if len(shape) < 2:
        raise ValueError(f"a weight matrix has rank >= 2, got shape {tuple(shape)}")
    if _TRANSPOSED_TYPES.match(layer_type):
        return int(shape[0]), int(math.prod(shape[1:]))
    return int(math.prod(shape[1:])), int(shape[0])


@dataclass(frozen=True)
class ConditionRow:
    """One matrix against the spectral condition (``target``/``ratio`` None for embeddings)."""

    name: str
    layer_type: str
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    sigma_max: float
    target: float | None  # sqrt(fan_out / fan_in)
    ratio: float | None  # sigma_max / target: the RMS-to-RMS operator norm
    note: str = ""

    @property
    def far(self) -> bool:
        """The ratio lies beyond :data:`FAR_FACTOR` either way (information, not a verdict)."""
        return self.ratio is not None and not (1 / FAR_FACTOR <= self.ratio <= FAR_FACTOR)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer_type": self.layer_type,
            "shape": list(self.shape),
            "fan_in": self.fan_in,
            "fan_out": self.fan_out,
            "sigma_max": self.sigma_max,
            "target": self.target,
            "ratio": self.ratio,
            "far": self.far,
            "note": self.note,
        }


def condition_row(name: str, layer_type: str, shape: Sequence[int], sigma_max: float) -> ConditionRow:
    """The spectral-condition row of one matrix from its top singular value (pure Python)."""
    fan_in, fan_out = fans(layer_type, shape)
    if is_embedding(name, layer_type):
        return ConditionRow(
            name,
            layer_type,
            tuple(shape),
            fan_in,
            fan_out,
            sigma_max,
            None,
            None,
            "embedding: one-hot inputs, no spectral target",
        )
    target = math.sqrt(fan_out / fan_in)
    ratio = sigma_max / target
    return ConditionRow(name, layer_type, tuple(shape), fan_in, fan_out, sigma_max, target, ratio)


def condition_target(layer_type: str, shape: Sequence[int]) -> float:
    """The spectral condition's target ``sqrt(fan_out / fan_in)`` for a weight of this shape."""
    fan_in, fan_out = fans(layer_type, shape)
    return math.sqrt(fan_out / fan_in)


def spectral_condition(
    source: Any,
    *,
    k: int = 1,
    tol: float = 1e-4,
    include: str | None = None,
    exclude: str | None = None,
    spectra: Mapping[str, Any] | None = None,
) -> list[ConditionRow]:
    """Every weight matrix of one model (an ``nn.Module`` or a ``state_dict``) against the
    spectral condition, in the model's order.

    Args:
        source: the model or its state_dict.
        k / tol / include / exclude: as in :func:`~hptransfer.diagnostics.spectral.model_spectrum`.
        spectra: already computed spectra of ``source`` (``{name: LayerSpectrum}``) to reuse.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(64, 256, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.eye(256, 64) * 3.0)   # sigma_max 3, target 2
        >>> [(r.name, round(r.ratio, 6)) for r in spectral_condition(lin)]
        [('weight', 1.5)]
    """
    if spectra is None:
        from hptransfer.diagnostics.spectral import model_spectrum

        spectra = model_spectrum(source, k=k, tol=tol, include=include, exclude=exclude)
    return [condition_row(s.name, s.layer_type, s.shape, s.sigma_max) for s in spectra.values()]
