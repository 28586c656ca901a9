"""``suggest(config, width)``: base hyperparameters carried to a target width by a rule.

Pure Python, no torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from hptransfer.scaling.config import ConfigError, ProxyConfig
from hptransfer.scaling.rules import ParamClass, ScalingRule

__all__ = ["GroupHyper", "Plan", "WidthError", "suggest"]


#: Widest model a plan is made for: beyond it the width rules leave float range.
MAX_WIDTH = 2**40


class WidthError(ConfigError):
    """A target width the proxy cannot be carried to (non-integer, too small, indivisible)."""


@dataclass(frozen=True)
class GroupHyper:
    """Hyperparameters of one parameter class at the target width.

    ``lr_scale`` is ``lr / plan.base_lr``: torch optimisers keep it when a multiplicative
    scheduler (``LambdaLR``, warmup-cosine) scales every group's lr by the same factor.

    ``init_std`` is an explicit init std at this width (matrices redrawn as N(0, std²)), or
    ``None``: the model's own init is kept, corrected by ``m ** init_exponent`` relative to the
    base width. ``init_scale`` multiplies either.
    """

    param_class: ParamClass
    lr: float
    lr_scale: float
    weight_decay: float
    init_std: float | None
    multiplier: float
    init_scale: float = 1.0
    init_exponent: float = 0.0

    @property
    def tau(self) -> float:
        """AdamW timescale in steps, ``1/(lr*weight_decay)``; ``inf`` without decay."""
        rate = self.lr * self.weight_decay
        return math.inf if rate == 0 else 1.0 / rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "lr_scale": self.lr_scale,
            "weight_decay": self.weight_decay,
            "init_std": self.init_std,
            "init_scale": self.init_scale,
            "init_exponent": self.init_exponent,
            "multiplier": self.multiplier,
            "tau": None if math.isinf(self.tau) else self.tau,
        }


@dataclass(frozen=True)
class Plan:
    """Per-class hyperparameters at ``width``; index it by :class:`ParamClass` or its name."""

    rule: ScalingRule
    width: int
    base_width: int
    base_lr: float
    groups: Mapping[ParamClass, GroupHyper]
    n_heads: int | None = None
    head_dim: int | None = None
    attention_scale: float | None = None
    base_output_mult: float = 1.0
    zero_biases: bool = False

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width

    @property
    def optimizer(self) -> str:
        """The optimizer these numbers are for (``adamw``, ``adam`` or ``sgd``)."""
        return self.rule.optimizer

    @property
    def tied_output_multiplier(self) -> float:
        """Forward multiplier of a readout that shares its weight with the embedding.

        The shared weight is vector-like (lr and init as the embedding), so under muP the
        readout's output is scaled by ``output_mult / m`` instead (mup's ``MuSharedReadout``);
        under SP it stays ``output_mult``.
        """
        if not self.rule.is_mup:
            return self.base_output_mult
        return self.base_output_mult / self.width_mult

    def __getitem__(self, key: ParamClass | str) -> GroupHyper:
        return self.groups[ParamClass(key)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "wd_exponent": self.rule.wd_exponent,
            "readout": self.rule.readout,
            "width": self.width,
            "base_width": self.base_width,
            "width_mult": self.width_mult,
            "base_lr": self.base_lr,
            "n_heads": self.n_heads,
            "head_dim": self.head_dim,
            "attention_scale": self.attention_scale,
            "tied_output_multiplier": self.tied_output_multiplier,
            "optimizer": self.optimizer,
            "weight_decay_convention": "torch.optim.AdamW (decay step = lr * weight_decay * p)",
            "groups": {str(c): g.to_dict() for c, g in self.groups.items()},
        }


def check_width(config: ProxyConfig, width: Any) -> int:
    """Return ``width`` as an int, or raise :class:`WidthError` saying what is wrong.

    Takes Python and NumPy integers, integral floats, and strings of digits (read exactly,
    however large they are written; "16.0" is refused).
    """
    bad = WidthError(f"width must be a positive integer, got {width!r}")
    if isinstance(width, bool):
        raise bad
    if isinstance(width, numbers.Integral):
        w = int(width)
    elif isinstance(width, str):  # as typed on a command line: digits only, read exactly
        text = width.strip()
        if not (text.isascii() and text.lstrip("+").isdigit()):
            raise bad
        w = int(text)
    elif isinstance(width, numbers.Real):
        as_float = float(width)
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise bad
        w = int(as_float)
    else:
        raise bad
    if w > MAX_WIDTH:
        shown = str(w) if w < 10**16 else f"{str(w)[:6]}…({len(str(w))} digits)"
        raise WidthError(f"width {shown} is larger than any model hptransfer can plan for (at most 2**40)")
    if w <= 0:
        raise WidthError(f"width must be a positive integer, got {w}")
    if w < config.min_width:
        raise WidthError(
            f"width {w} is smaller than the model allows ({config.min_width}: one head of "
            f"head_dim={config.head_dim})"
            if config.head_dim
            else f"width {w} is smaller than the model allows ({config.min_width})"
        )
    if config.head_dim and w % config.head_dim:
        lo = w // config.head_dim * config.head_dim
        raise WidthError(
            f"width {w} is not divisible by head_dim={config.head_dim} (the head count must be "
            f"whole); try {lo} or {lo + config.head_dim}"
        )
    if config.n_heads and w % config.n_heads:
        raise WidthError(f"width {w} is not divisible by the head count n_heads={config.n_heads}")
    return w


def suggest(config: ProxyConfig, width: int, rule: ScalingRule | str | None = None) -> Plan:
    """Carry ``config``'s base hyperparameters to ``width``.

    Args:
        config: the proxy config (base width, base hyperparameters, rule).
        width: target width (model dimension), a positive integer the model allows.
        rule: override the config's rule (a :class:`ScalingRule` or a preset name).

    Example:
        >>> from hptransfer.scaling import default_config, suggest
        >>> plan = suggest(default_config(), 4096)
        >>> plan["hidden"].lr == default_config().lr / 16
        True
    """
    w = check_width(config, width)
    if rule is None:
        scaling = config.scaling_rule()
    elif isinstance(rule, str):
        scaling = config.with_rule(rule).scaling_rule()
    elif isinstance(rule, ScalingRule):
        scaling = rule
    else:
        raise ConfigError(
            f"rule must be a ScalingRule or a preset name such as 'mup-wd-linear', got {rule!r}"
        )
    m = w / config.base_width
    base_init = {
        ParamClass.VECTOR: config.embed_init_std,
        ParamClass.HIDDEN: config.init_std,
        ParamClass.OUTPUT: config.output_init_std,
    }
    base_scale = {
        ParamClass.VECTOR: config.embed_init_scale,
        ParamClass.HIDDEN: config.init_scale,
        ParamClass.OUTPUT: 1.0,
    }
    base_lr_mult = {ParamClass.VECTOR: config.vector_lr_mult, ParamClass.HIDDEN: 1.0, ParamClass.OUTPUT: 1.0}
    base_mult = {ParamClass.VECTOR: 1.0, ParamClass.HIDDEN: 1.0, ParamClass.OUTPUT: config.output_mult}
    groups: dict[ParamClass, GroupHyper] = {}
    for cls, ex in scaling.exponents.items():
        lr_scale = base_lr_mult[cls] * m**ex.lr
        std = base_init[cls]
        groups[cls] = GroupHyper(
            param_class=cls,
            lr=config.lr * lr_scale,
            lr_scale=lr_scale,
            weight_decay=config.weight_decay * m**ex.wd if ex.decay else 0.0,
            init_std=None if std is None else std * m**ex.init_std,
            multiplier=base_mult[cls] * m**ex.multiplier,
            init_scale=base_scale[cls],
            init_exponent=ex.init_std,
        )
    for cls, g in groups.items():
        for key, value in (("lr", g.lr), ("weight_decay", g.weight_decay), ("init_std", g.init_std)):
            if value is not None and not math.isfinite(value):
                raise ConfigError(
                    f"{cls} {key} at width {w} is not a finite number (base value × {m:g}^exponent "
                    "overflows): lower the base value or the exponent"
                )
    heads = config.heads_at(w)
    attention_scale = None
    if heads is not None:
        base_heads = config.heads_at(config.base_width)
        assert base_heads is not None
        base_hd, hd = base_heads[1], heads[1]
        # attn_mult = 1 is SP's 1/sqrt(d_head) at the base width; muP then scales as 1/d_head.
        attention_scale = config.attn_mult / math.sqrt(base_hd) * (base_hd / hd) ** scaling.attention_exponent
    return Plan(
        rule=scaling,
        width=w,
        base_width=config.base_width,
        base_lr=config.lr,
        groups=MappingProxyType(groups),
        n_heads=heads[0] if heads else None,
        head_dim=heads[1] if heads else None,
        attention_scale=attention_scale,
        base_output_mult=config.output_mult,
        zero_biases=config.init_std is not None,
    )
