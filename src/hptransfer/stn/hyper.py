"""Hyperparameter specs for Self-Tuning Networks: bounds, transforms, perturbation scale, entropy.

Each hyperparameter lives in an unconstrained space ``u`` where the STN perturbs it and takes
gradient steps:

* ``logit`` (rates such as dropout or label smoothing): ``value = low + (high - low) * sigmoid(u)``,
  so every ``u`` maps strictly inside ``(low, high)``;
* ``log`` (positive scales such as weight decay or input-noise std): ``value = exp(u)`` with ``u``
  kept in ``[log low, log high]`` (perturbed samples are clipped, the parameter is projected after
  each step).

The perturbation distribution is ``N(0, diag(sigma^2))`` in ``u`` space with
``sigma = softplus(rho)`` learned; its entropy ``H = sum(log sigma) + n/2 (1 + log 2 pi)`` enters
the validation objective as ``- tau * H`` so that sigma does not collapse.

Example:
    >>> spec = HyperSpec("dropout", init=0.1, low=0.0, high=0.9)
    >>> round(spec.value(spec.to_unconstrained(0.3)), 6)
    0.3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["DEFAULT_TRANSFORMS", "RATE_NAMES", "HyperParams", "HyperSpec", "Transform", "base_name"]

Transform = Literal["logit", "log"]

#: transform used when a spec does not name one, keyed by the name before the first dot
DEFAULT_TRANSFORMS: dict[str, Transform] = {
    "dropout": "logit",
    "label_smoothing": "logit",
    "input_mask": "logit",
    "weight_decay": "log",
    "l2": "log",
    "input_noise": "log",
    "augment": "logit",
}
#: hyperparameters that are probabilities: bounds must lie in [0, 1) (dropout 1 drops everything)
RATE_NAMES = ("dropout", "label_smoothing")


def base_name(name: str) -> str:
    """``"dropout.encoder.0"`` -> ``"dropout"``."""
    return name.split(".", 1)[0]


def _softplus_inv(x: float) -> float:
    return x + math.log(-math.expm1(-x))


@dataclass(frozen=True)
class HyperSpec:
    """One tuned hyperparameter.

    Args:
        name: ``dropout``, ``dropout.<module path>``, ``weight_decay`` (AdamW's decoupled decay;
            ``weight_decay.hidden|output|vector|<layer>``), ``l2`` (an L2 term; ``l2.<layer>``),
            ``input_noise``, ``input_mask``, ``label_smoothing``, ``augment`` (the strength of a
            data augmentation; see :mod:`hptransfer.stn.tuner`).
        init: starting value, inside ``[low, high]`` (strictly inside for ``logit``).
        low, high: bounds. ``logit`` needs finite ``low < high``; ``log`` needs ``0 < low < high``
            (``high`` may be ``inf``).
        transform: ``"logit"`` or ``"log"``; default from :data:`DEFAULT_TRANSFORMS`.
        sigma: initial perturbation scale in unconstrained space.
        train_only: the hyperparameter acts on the training objective only (all built-in ones do);
            the validation objective is then evaluated without it.
        integer: the value is an integer count; the training step uses stochastic rounding
            (``floor(v) + Bernoulli(frac(v))``, unbiased), the hypernetwork sees the continuous value.
    """

    name: str
    init: float
    low: float
    high: float
    transform: Transform | None = None
    sigma: float = 0.5
    train_only: bool = True
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("hyperparameter name must be a non-empty string")
        transform = self.transform or DEFAULT_TRANSFORMS.get(base_name(self.name))
        if transform is None:
            raise ValueError(
                f"{self.name}: no default transform for this name; pass transform='logit' "
                "(a rate or bounded value) or transform='log' (a positive scale)"
            )
        if transform not in ("logit", "log"):
            raise ValueError(f"{self.name}: transform must be 'logit' or 'log', got {transform!r}")
        object.__setattr__(self, "transform", transform)
        for key in ("init", "low", "high", "sigma"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise ValueError(f"{self.name}: {key} must be a number, got {v!r}")
        lo, hi, init = float(self.low), float(self.high), float(self.init)
        if not lo < hi:
            raise ValueError(
                f"{self.name}: bounds reversed or empty (low={lo:g} >= high={hi:g}); "
                "write them as low,high with low < high"
            )
        if not self.sigma > 0 or math.isinf(self.sigma):
            raise ValueError(f"{self.name}: sigma must be a finite number > 0, got {self.sigma:g}")
        if transform == "logit":
            if math.isinf(lo) or math.isinf(hi):
                raise ValueError(
                    f"{self.name}: the logit transform needs finite bounds, got "
                    f"[{lo:g}, {hi:g}]; use transform='log' for an unbounded scale"
                )
            if base_name(self.name) in RATE_NAMES and not (lo >= 0.0 and hi < 1.0):
                raise ValueError(
                    f"{self.name}: a rate needs bounds inside [0, 1) (e.g. 0,0.9), got [{lo:g}, {hi:g}]"
                )
            if not lo < init < hi:
                raise ValueError(f"{self.name}: init={init:g} must lie strictly inside ({lo:g}, {hi:g})")
        else:
            if not lo > 0.0:
                raise ValueError(
                    f"{self.name}: the log transform needs low > 0 (a positive scale), "
                    f"got low={lo:g}; e.g. 1e-6,1"
                )
            if not lo <= init <= hi:
                raise ValueError(f"{self.name}: init={init:g} must lie inside [{lo:g}, {hi:g}]")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)
        object.__setattr__(self, "init", init)

    # -- transforms (work on floats and tensors) -----------------------------------------------
    def to_unconstrained(self, value: float) -> float:
        """Inverse of :meth:`value` (values on a ``logit`` bound map to ±inf)."""
        if self.transform == "logit":
            p = (value - self.low) / (self.high - self.low)
            if p <= 0.0:
                return -math.inf
            if p >= 1.0:
                return math.inf
            return math.log(p) - math.log1p(-p)
        return math.log(value)

    def value(self, u: Any) -> Any:
        """Constrained value of unconstrained ``u`` (a float or a tensor)."""
        if isinstance(u, torch.Tensor):
            if self.transform == "logit":
                return self.low + (self.high - self.low) * torch.sigmoid(u)
            return torch.exp(u.clamp(*self.u_bounds))
        if self.transform == "logit":
            return self.low + (self.high - self.low) / (1.0 + math.exp(-u))
        return math.exp(min(max(u, self.u_bounds[0]), self.u_bounds[1]))

    @property
    def u_bounds(self) -> tuple[float, float]:
        """The interval ``u`` is kept in (infinite for ``logit``)."""
        if self.transform == "logit":
            return -math.inf, math.inf
        return math.log(self.low), (math.log(self.high) if math.isfinite(self.high) else math.inf)

    @property
    def u_center_scale(self) -> tuple[float, float]:
        """Affine normalisation of ``u`` for the hypernetwork input: ``(u - center) / scale``."""
        if self.transform == "logit":
            return 0.0, 2.0
        lo, hi = self.u_bounds
        if math.isfinite(hi):
            return (lo + hi) / 2.0, max((hi - lo) / 2.0, 1e-3)
        return math.log(self.init), 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HyperParams(nn.Module):
    """The tuned hyperparameters of one STN: unconstrained values ``u`` and scales ``rho``.

    Example:
        >>> hp = HyperParams([HyperSpec("dropout", 0.2, 0.0, 0.9),
        ...                   HyperSpec("weight_decay", 1e-3, 1e-6, 1.0)])
        >>> sorted(hp.values_dict())
        ['dropout', 'weight_decay']
    """

    u_lo: torch.Tensor
    u_hi: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    is_logit: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, specs: Sequence[HyperSpec]) -> None:
        super().__init__()
        specs = list(specs)
        if not specs:
            raise ValueError("give at least one hyperparameter to tune")
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"hyperparameter given twice: {', '.join(dupes)}")
        self.specs: tuple[HyperSpec, ...] = tuple(specs)
        self.names: tuple[str, ...] = tuple(names)
        self.u = nn.Parameter(torch.tensor([s.to_unconstrained(s.init) for s in specs], dtype=torch.float32))
        self.rho = nn.Parameter(torch.tensor([_softplus_inv(s.sigma) for s in specs], dtype=torch.float32))
        lo = [s.u_bounds[0] for s in specs]
        hi = [s.u_bounds[1] for s in specs]
        cs = [s.u_center_scale for s in specs]
        for key, data in (
            ("u_lo", lo),
            ("u_hi", hi),
            ("center", [c for c, _ in cs]),
            ("scale", [s for _, s in cs]),
        ):
            self.register_buffer(key, torch.tensor(data, dtype=torch.float32), persistent=False)
        logit = [s.transform == "logit" for s in specs]
        self.register_buffer("is_logit", torch.tensor(logit), persistent=False)
        self.register_buffer(
            "lo", torch.tensor([s.low if g else 0.0 for s, g in zip(specs, logit)]), persistent=False
        )
        self.register_buffer(
            "hi", torch.tensor([s.high if g else 1.0 for s, g in zip(specs, logit)]), persistent=False
        )

    def __len__(self) -> int:
        return len(self.specs)

    def sigma(self) -> torch.Tensor:
        """Perturbation scales in unconstrained space, ``softplus(rho)``."""
        return nn.functional.softplus(self.rho)

    def entropy(self) -> torch.Tensor:
        """Entropy of ``N(0, diag(sigma^2))``: ``sum(log sigma) + n/2 (1 + log 2 pi)``."""
        n = len(self.specs)
        return torch.log(self.sigma()).sum() + 0.5 * n * (1.0 + math.log(2.0 * math.pi))

    def sample(self, generator: torch.Generator | None = None, n: int | None = None) -> torch.Tensor:
        """``u + sigma * eps`` (reparameterised: differentiable in ``u`` and ``rho``), clipped to bounds;
        ``n`` draws as rows of an ``(n, len(specs))`` tensor when ``n`` is given."""
        shape = self.u.shape if n is None else (n, *self.u.shape)
        eps = torch.randn(shape, generator=generator).to(self.u.device)
        return self.clip(self.u + self.sigma() * eps)

    def clip(self, u: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(u, self.u_hi), self.u_lo)

    def net_input(self, u: torch.Tensor) -> torch.Tensor:
        """Normalised unconstrained values, the hypernetwork input (about [-1, 1] inside the bounds)."""
        return (u - self.center) / self.scale

    def values(self, u: torch.Tensor | None = None) -> torch.Tensor:
        """Constrained values of ``u`` (default: the current ``self.u``), one per spec."""
        u = self.u if u is None else u
        logit = self.lo + (self.hi - self.lo) * torch.sigmoid(u)
        return torch.where(self.is_logit, logit, torch.exp(self.clip(u)))

    def values_dict(self, u: torch.Tensor | None = None) -> dict[str, float]:
        with torch.no_grad():
            vals = self.values(u).tolist()
        return dict(zip(self.names, vals))

    def sigma_dict(self) -> dict[str, float]:
        with torch.no_grad():
            return dict(zip(self.names, self.sigma().tolist()))

    @torch.no_grad()
    def project_(self) -> None:
        """Keep ``u`` inside the bounds of ``log`` specs (call after each optimiser step)."""
        self.u.copy_(self.clip(self.u))
