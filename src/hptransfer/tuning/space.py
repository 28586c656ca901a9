"""Search spaces in width-independent base units.

Every parameter of a :class:`SearchSpace` is a field of :class:`~hptransfer.scaling.ProxyConfig`
(``lr``, ``weight_decay``, the multipliers ``vector_lr_mult``, ``init_scale``,
``embed_init_scale``, ``output_mult``, ``attn_mult``, and the explicit init stds): a *base*
hyperparameter, defined at the config's base width. A trial's values therefore make a
``ProxyConfig`` (``dataclasses.replace`` on the base config) and ``suggest(config, width)`` carries
that trial to any width. Optuna parameter names are the field names, so ``study.best_params`` reads
as a config.

No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hptransfer.scaling import ConfigError, ProxyConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["TUNABLE", "Range", "SearchSpace", "default_space"]

#: ProxyConfig fields a search space may tune (all are width-independent base values).
TUNABLE = (
    "lr",
    "weight_decay",
    "vector_lr_mult",
    "init_scale",
    "embed_init_scale",
    "output_mult",
    "attn_mult",
    "init_std",
    "embed_init_std",
    "output_init_std",
)


@dataclass(frozen=True)
class Range:
    """One base hyperparameter's range; ``log=True`` samples uniformly in log space."""

    low: float
    high: float
    log: bool = True

    def __post_init__(self) -> None:
        for v in (self.low, self.high):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"range bounds must be finite numbers, got {self.low!r}..{self.high!r}")
        if not self.low < self.high:
            raise ConfigError(f"range low must be < high, got {self.low}..{self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"a log range needs low > 0, got {self.low}..{self.high}")

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of base hyperparameters (ProxyConfig field name → :class:`Range`).

    Example:
        >>> import optuna
        >>> from hptransfer.scaling import default_config, suggest
        >>> space = SearchSpace({"lr": Range(2**-12, 2**-4), "weight_decay": Range(1e-3, 1.0)})
        >>> trial = optuna.trial.FixedTrial({"lr": 2**-8, "weight_decay": 0.1})
        >>> config = space.config(default_config(), space.sample(trial))
        >>> suggest(config, 4 * config.base_width)["hidden"].lr == 2**-8 / 4
        True
    """

    ranges: Mapping[str, Range] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ConfigError("a search space needs at least one parameter")
        for name, rng in self.ranges.items():
            if name not in TUNABLE:
                raise ConfigError(
                    f"cannot tune {name!r}: a search space takes base hyperparameters " + ", ".join(TUNABLE)
                )
            if not isinstance(rng, Range):
                raise ConfigError(f"{name}: expected a Range, got {rng!r}")
        object.__setattr__(self, "ranges", dict(self.ranges))

    def __iter__(self) -> Iterator[str]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def sample(self, trial: optuna.trial.BaseTrial) -> dict[str, float]:
        """Ask ``trial`` for every base hyperparameter (Optuna names = config field names)."""
        return {
            name: float(trial.suggest_float(name, rng.low, rng.high, log=rng.log))
            for name, rng in self.ranges.items()
        }

    def config(self, base: ProxyConfig, params: Mapping[str, float]) -> ProxyConfig:
        """``base`` with the sampled base hyperparameters in place (unknown names refused)."""
        unknown = [k for k in params if k not in TUNABLE]
        if unknown:
            raise ConfigError(f"parameters {unknown} are not base hyperparameters ({', '.join(TUNABLE)})")
        values: dict[str, Any] = {k: float(v) for k, v in params.items()}
        return replace(base, **values)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: rng.to_dict() for name, rng in self.ranges.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        try:
            return cls(
                {
                    k: Range(float(v["low"]), float(v["high"]), bool(v.get("log", True)))
                    for k, v in data.items()
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"malformed search space {dict(data)!r}: {exc}") from None

    def without(self, *names: str) -> SearchSpace:
        """A copy without ``names`` (they stay at the base config's values)."""
        return SearchSpace({k: v for k, v in self.ranges.items() if k not in names})


def default_space(
    *,
    lr: tuple[float, float] | None = (2.0**-12, 2.0**-3),
    weight_decay: tuple[float, float] | None = (1e-3, 1.0),
    vector_lr_mult: tuple[float, float] | None = (2.0**-3, 2.0**3),
    init_scale: tuple[float, float] | None = (2.0**-2, 2.0**2),
    embed_init_scale: tuple[float, float] | None = (2.0**-3, 2.0**3),
    output_mult: tuple[float, float] | None = (2.0**-3, 2.0**3),
    attn_mult: tuple[float, float] | None = (2.0**-2, 2.0**2),
    init_std: tuple[float, float] | None = None,
    embed_init_std: tuple[float, float] | None = None,
    output_init_std: tuple[float, float] | None = None,
) -> SearchSpace:
    """The usual proxy space, every range on a log scale; ``None`` leaves a parameter out.

    Defaults: lr 2^-12..2^-3 and weight decay 1e-3..1 (torch AdamW's coefficient), and the
    multipliers, 1 meaning "as the model was written": the lr of vector-like parameters
    (embeddings, biases, norm gains) relative to hidden matrices 2^-3..2^3, the scale of the
    model's own init of hidden matrices 2^-2..2^2 and of embeddings 2^-3..2^3, the output
    multiplier 2^-3..2^3 and the attention multiplier 2^-2..2^2 (1 = SP's 1/sqrt(d_head) at the
    base width). Explicit init stds (redrawing the model's init) are searched only when given.
    """
    ranges: dict[str, Range] = {}
    for name, bounds in (
        ("lr", lr),
        ("weight_decay", weight_decay),
        ("vector_lr_mult", vector_lr_mult),
        ("init_scale", init_scale),
        ("embed_init_scale", embed_init_scale),
        ("output_mult", output_mult),
        ("attn_mult", attn_mult),
        ("init_std", init_std),
        ("embed_init_std", embed_init_std),
        ("output_init_std", output_init_std),
    ):
        if bounds is not None:
            ranges[name] = Range(float(bounds[0]), float(bounds[1]), log=True)
    return SearchSpace(ranges)
