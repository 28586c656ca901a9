"""``suggest(config, width)``: base hyperparameters carried to a target width by a rule.

Pure Python, no torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hptransfer.scaling.config import ConfigError, ProxyConfig
from hptransfer.scaling.rules import OPTIMIZERS, ClassExponents, ParamClass, ScalingRule

__all__ = ["KINDS", "GroupHyper", "Plan", "WidthError", "check_depth", "check_tokens", "suggest"]


#: Widest model a plan is made for: beyond it the width rules leave float range.
MAX_WIDTH = 2**40


class WidthError(ConfigError):
    """A target width the proxy cannot be carried to (non-integer, too small, indivisible)."""


#: The kinds a class can be split into: hidden matrices of attention or of the MLP (their own wd
#: exponents, ``ProxyConfig.wd_exponents``), and vector-like parameters inside residual blocks
#: (norm gains and biases of the blocks: a depth rule scales their lr; ``vector`` alone means
#: the embeddings and the final norm).
KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"hidden": ("attention", "mlp"), "vector": ("block",)}
)


@dataclass(frozen=True)
class GroupHyper:
    """Hyperparameters of one parameter class at the target width (and depth, run length).

    ``lr_scale`` is ``lr / plan.base_lr``: torch optimisers keep it when a multiplicative
    scheduler (``LambdaLR``, warmup-cosine) scales every group's lr by the same factor.

    ``init_std`` is an explicit init std at this width (matrices redrawn as N(0, std²)), or
    ``None``: the model's own init is kept, corrected by ``m ** init_exponent`` relative to the
    base width. ``init_scale`` multiplies either.

    ``eps`` is Adam's epsilon for the class (the base ``eps`` unless the config scales it).
    ``kind`` names a sub-class (see :data:`KINDS`), ``None`` for the class itself.

    ``wd_scale`` is ``weight_decay / base weight decay`` (width, depth and run-length factors;
    0 for a class without decay): a base weight decay of the user's own is carried by it.
    """

    param_class: ParamClass
    lr: float
    lr_scale: float
    weight_decay: float
    init_std: float | None
    multiplier: float
    init_scale: float = 1.0
    init_exponent: float = 0.0
    eps: float = 1e-8
    kind: str | None = None
    wd_scale: float = 1.0

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
            "eps": self.eps,
            "init_std": self.init_std,
            "init_scale": self.init_scale,
            "init_exponent": self.init_exponent,
            "multiplier": self.multiplier,
            "tau": None if math.isinf(self.tau) else self.tau,
        }


@dataclass(frozen=True)
class Plan:
    """Per-class hyperparameters at ``width`` (and ``depth``, ``iterations``); index it by
    :class:`ParamClass` or its name, or ask :meth:`group_for` for a kind inside a class.

    ``groups[HIDDEN]``: hidden matrices (inside residual blocks); ``groups[VECTOR]``: vector-like
    parameters outside blocks (embeddings, final norm); ``groups[OUTPUT]``: the readout.
    ``variants`` holds the kinds (``"hidden.attention"``, ``"hidden.mlp"``, ``"vector.block"``),
    always all three, each equal to its class's group where nothing sets it apart.

    ``residual_multiplier`` multiplies every residual branch (``x + mult * f(x)``); 1 without a
    depth rule, at the base depth, or when no ``depth`` was asked for (``depth`` is then None:
    the plan holds at the proxy's own depth).
    """

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
    depth: int | None = None
    base_depth: int | None = None
    depth_rule: str = "none"
    depth_alpha: float = 0.0
    residual_multiplier: float = 1.0
    iterations: float | None = None
    base_iterations: float | None = None
    tokens: float | None = None
    batch_tokens: float | None = None
    scale_eps: bool = False
    wd_length_exponent: float = 1.0
    variants: Mapping[str, GroupHyper] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width

    @property
    def depth_mult(self) -> float:
        """``depth / base_depth`` (1 when the config has no base depth)."""
        if self.depth is None or self.base_depth is None:
            return 1.0
        return self.depth / self.base_depth

    @property
    def optimizer(self) -> str:
        """The optimizer these numbers are for (``adamw``, ``adam``, ``sgd`` or ``muon``)."""
        return self.rule.optimizer

    @property
    def muon_adjust_lr_fn(self) -> str | None:
        """``adjust_lr_fn`` to give ``torch.optim.Muon`` for the hidden matrices (``None``
        unless the optimizer is ``muon``); the hidden lr exponent was derived for it."""
        return self.rule.muon_adjust_lr_fn if self.optimizer == "muon" else None

    @property
    def wd_length_factor(self) -> float:
        """What the run length multiplies every decayed class's wd by:
        ``(base_iterations / iterations) ** wd_length_exponent`` (1 when either is unknown)."""
        return float((1.0 / self.length_mult) ** self.wd_length_exponent)

    @property
    def length_mult(self) -> float:
        """``iterations / base_iterations`` (1 when either is unknown)."""
        if self.iterations is None or self.base_iterations is None:
            return 1.0
        return self.iterations / self.base_iterations

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

    def group_for(self, param_class: ParamClass | str, kind: str | None = None) -> GroupHyper:
        """The hyperparameters of ``param_class``, or of one ``kind`` inside it: ``"attention"``
        or ``"mlp"`` for hidden matrices, ``"block"`` for vector-like parameters inside residual
        blocks (see :data:`KINDS`).

        Raises:
            ValueError: a kind the class does not have.
        """
        cls = ParamClass(param_class)
        if kind is None:
            return self.groups[cls]
        if kind not in KINDS.get(str(cls), ()):
            allowed = ", ".join(f"{c}: {'/'.join(k)}" for c, k in KINDS.items())
            raise ValueError(f"{cls} has no kind {kind!r} (kinds: {allowed})")
        return self.variants.get(f"{cls}.{kind}", self.groups[cls])

    def weight_decay_for(self, param_class: ParamClass | str, kind: str | None = None) -> float:
        """Weight decay of ``param_class`` (or of its ``kind``, e.g. ``("hidden", "mlp")``)."""
        return self.group_for(param_class, kind).weight_decay

    def tau_fraction(self, param_class: ParamClass | str, kind: str | None = None) -> float | None:
        """The AdamW timescale as a fraction of the run, ``tau / iterations`` (Wang & Aitchison,
        arXiv 2405.13698); ``None`` when the run length is unknown, ``inf`` without decay."""
        if self.iterations is None:
            return None
        return self.group_for(param_class, kind).tau / self.iterations

    def to_dict(self) -> dict[str, Any]:
        def group(key: str, g: GroupHyper) -> dict[str, Any]:
            out = g.to_dict()
            fraction = self.tau_fraction(g.param_class, g.kind)
            out["tau_fraction"] = None if fraction is None or math.isinf(fraction) else fraction
            return out

        return {
            "rule": self.rule.name,
            "wd_exponent": self.rule.wd_exponent,
            "readout": self.rule.readout,
            "width": self.width,
            "base_width": self.base_width,
            "width_mult": self.width_mult,
            "depth": self.depth,
            "base_depth": self.base_depth,
            "depth_mult": self.depth_mult,
            "depth_rule": self.depth_rule,
            "depth_alpha": self.depth_alpha,
            "residual_multiplier": self.residual_multiplier,
            "tokens": self.tokens,
            "batch_tokens": self.batch_tokens,
            "iterations": self.iterations,
            "base_iterations": self.base_iterations,
            "wd_length_exponent": self.wd_length_exponent,
            "wd_length_factor": self.wd_length_factor,
            "base_lr": self.base_lr,
            "n_heads": self.n_heads,
            "head_dim": self.head_dim,
            "attention_scale": self.attention_scale,
            "tied_output_multiplier": self.tied_output_multiplier,
            "optimizer": self.optimizer,
            "muon_adjust_lr_fn": self.muon_adjust_lr_fn,
            "scale_eps": self.scale_eps,
            "weight_decay_convention": "torch.optim.AdamW (decay step = lr * weight_decay * p)",
            "groups": {str(c): group(str(c), g) for c, g in self.groups.items()},
            "variants": {k: group(k, g) for k, g in self.variants.items()},
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


#: Deepest model a plan is made for.
MAX_DEPTH = 2**20

_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}


def parse_count(text: str, name: str) -> float:
    """A token count as typed: a number (``2e9``, ``65536``) or one with a decimal suffix
    ``K`` (1e3), ``M`` (1e6), ``G``/``B`` (1e9), ``T`` (1e12): ``"1M"`` is 1,000,000 (write
    ``1048576`` for 2^20).

    >>> parse_count("1.5M", "--batch")
    1500000.0

    Raises:
        ConfigError: not a positive finite number.
    """
    body = text.strip().replace("_", "")
    factor = 1.0
    if body[-1:].lower() in _SUFFIXES:
        factor = _SUFFIXES[body[-1].lower()]
        body = body[:-1]
    try:
        value = float(body) * factor
    except ValueError:
        raise ConfigError(
            f"{name} must be a positive number of tokens (e.g. 2e9, 65536 or 1M), got {text!r}"
        ) from None
    return check_tokens(value, name)


def check_tokens(value: Any, name: str) -> float:
    """``value`` as a positive finite float (a token count), or :class:`ConfigError`."""
    if isinstance(value, str):
        return parse_count(value, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a positive number of tokens, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a positive number of tokens, got {value!r}")
    return v


def check_depth(config: ProxyConfig, depth: Any) -> int | None:
    """``depth`` (number of residual blocks) as an int; None when ``depth`` is None (the plan
    then holds at the proxy's depth, whatever it is).

    Raises:
        ConfigError: not a positive integer, or a depth for a config without ``base_depth``.
    """
    if depth is None:
        return None
    bad = ConfigError(f"depth must be a positive integer (number of residual blocks), got {depth!r}")
    if isinstance(depth, bool):
        raise bad
    if isinstance(depth, numbers.Integral):
        d = int(depth)
    elif isinstance(depth, str):
        text = depth.strip()
        if not (text.isascii() and text.lstrip("+").isdigit()):
            raise bad
        d = int(text)
    elif isinstance(depth, numbers.Real):
        as_float = float(depth)
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise bad
        d = int(as_float)
    else:
        raise bad
    if d <= 0:
        raise ConfigError(f"depth must be a positive integer (number of residual blocks), got {d}")
    if d > MAX_DEPTH:
        raise ConfigError(f"depth {d} is deeper than any model hptransfer can plan for (at most 2**20)")
    if config.base_depth is None:
        raise ConfigError(
            f"depth {d} given, but the config has no proxy.base_depth (the proxy's number of residual "
            "blocks): add base_depth under [proxy] to carry hyperparameters to another depth"
        )
    return d


_DEPTH_ROW = {ParamClass.HIDDEN: "hidden", ParamClass.VECTOR: "vector", ParamClass.OUTPUT: "output"}


def suggest(
    config: ProxyConfig,
    width: int,
    rule: ScalingRule | str | None = None,
    *,
    depth: int | None = None,
    tokens: float | None = None,
    batch_tokens: float | None = None,
    optimizer: str | None = None,
) -> Plan:
    """Carry ``config``'s base hyperparameters to ``width`` (and ``depth``, and a run of
    ``tokens`` in steps of ``batch_tokens``).

    Args:
        config: the proxy config (base width and depth, base hyperparameters, rules, run).
        width: target width (model dimension), a positive integer the model allows.
        rule: override the config's rule (a :class:`ScalingRule` or a preset name).
        depth: target number of residual blocks (needs ``config.base_depth``); carried by the
            config's ``depth_rule`` (``none``, ``depth-mup``, ``completep``).
        tokens, batch_tokens: the target run's training tokens and tokens per optimizer step
            (default: the proxy's, ``config.tokens`` / ``config.batch_tokens``, which these need).
            Weight decay follows the AdamW timescale rule (Wang & Aitchison, arXiv 2405.13698;
            Bergsma et al., arXiv 2505.13738 for batch size): the timescale ``1/(lr*wd)`` stays
            the same fraction of the run, so every decayed class's wd is multiplied by
            ``base_iterations / iterations`` (to the power ``config.wd_length_exponent``, 1 by
            default; ``benchmarks/wd_length.py`` measures it); the lr is left as the width and
            depth rules set it.
        optimizer: override the rule's optimizer (``adamw``, ``adam``, ``sgd``, ``muon``).

    Example:
        >>> from hptransfer.scaling import default_config, suggest
        >>> plan = suggest(default_config(), 4096)
        >>> plan["hidden"].lr == default_config().lr / 16
        True

    Raises:
        WidthError / ConfigError: a width, depth, token count or optimizer that cannot be used.
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
    if optimizer is not None:
        if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        scaling = scaling.with_optimizer(optimizer)  # type: ignore[arg-type]
    d = check_depth(config, depth)
    depth_rule = config.depth_scaling_rule(scaling.optimizer)
    m_depth = d / config.base_depth if d is not None and config.base_depth is not None else 1.0

    base_iterations = config.iterations
    run_tokens, run_batch = config.tokens, config.batch_tokens
    if tokens is not None or batch_tokens is not None:
        if config.tokens is None or config.batch_tokens is None:
            given = "tokens" if tokens is not None else "batch_tokens"
            raise ConfigError(
                f"{given} given, but the config has no [train] tokens and batch_tokens (the proxy "
                "run's training tokens and tokens per step) to carry weight decay from"
            )
        if tokens is not None:
            run_tokens = check_tokens(tokens, "tokens")
        if batch_tokens is not None:
            run_batch = check_tokens(batch_tokens, "batch_tokens")
    iterations = None
    if run_tokens is not None and run_batch is not None:
        if run_batch > run_tokens:
            raise ConfigError(
                f"batch_tokens={run_batch:g} is more than tokens={run_tokens:g}: the run would be "
                "less than one optimizer step"
            )
        iterations = run_tokens / run_batch
    # AdamW timescale rule: lr*wd ~ 1/iterations keeps tau/iterations fixed (wd_length_exponent 1;
    # 0 holds wd fixed, values between are calibrated ones).
    length = (
        (base_iterations / iterations) ** config.wd_length_exponent if base_iterations and iterations else 1.0
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
    base_lr_mult = {
        ParamClass.VECTOR: config.vector_lr_mult,
        ParamClass.HIDDEN: config.hidden_lr_mult,
        ParamClass.OUTPUT: 1.0,
    }
    base_mult = {ParamClass.VECTOR: 1.0, ParamClass.HIDDEN: 1.0, ParamClass.OUTPUT: config.output_mult}
    rule_e = scaling.wd_exponent if scaling.wd_exponent is not None else 0.0
    overrides = config.wd_exponents
    if overrides and not scaling.is_mup:
        raise ConfigError(f"wd_exponents need a muP rule; rule {scaling.name!r} scales nothing with width")

    def make(cls: ParamClass, kind: str | None, depth_row: str, wd_key: str | None) -> GroupHyper:
        ex: ClassExponents = scaling.exponents[cls]
        dx: ClassExponents = depth_rule.exponents[depth_row]
        shift = overrides[wd_key] - rule_e if wd_key is not None and wd_key in overrides else 0.0
        lr_scale = base_lr_mult[cls] * m**ex.lr * m_depth**dx.lr
        std = base_init[cls]
        eps = config.eps * m**ex.eps * m_depth**dx.eps if config.scale_eps else config.eps
        wd_scale = m ** (ex.wd + shift) * m_depth**dx.wd * length if ex.decay else 0.0
        return GroupHyper(
            param_class=cls,
            lr=config.lr * lr_scale,
            lr_scale=lr_scale,
            weight_decay=config.weight_decay * wd_scale,
            wd_scale=wd_scale,
            init_std=None if std is None else std * m**ex.init_std * m_depth**dx.init_std,
            multiplier=base_mult[cls] * m**ex.multiplier,
            init_scale=base_scale[cls],
            init_exponent=ex.init_std,
            eps=eps,
            kind=kind,
        )

    groups: dict[ParamClass, GroupHyper] = {}
    for cls in scaling.exponents:
        groups[cls] = make(cls, None, _DEPTH_ROW[cls], "output" if cls is ParamClass.OUTPUT else None)
    variants = {
        "hidden.attention": make(ParamClass.HIDDEN, "attention", "hidden", "attention"),
        "hidden.mlp": make(ParamClass.HIDDEN, "mlp", "hidden", "mlp"),
        "vector.block": make(ParamClass.VECTOR, "block", "block_vector", None),
    }
    for label, g in [*((str(c), g) for c, g in groups.items()), *variants.items()]:
        for key, value in (
            ("lr", g.lr),
            ("weight_decay", g.weight_decay),
            ("init_std", g.init_std),
            ("eps", g.eps),
        ):
            where = f"{label} {key} at width {w}" + (f", depth {d}" if d is not None else "")
            if value is not None and not math.isfinite(value):
                raise ConfigError(
                    f"{where} is not a finite number (base value × multiplier^exponent overflows): "
                    "lower the base value or the exponent"
                )
            if value == 0 and key in ("lr", "eps"):
                raise ConfigError(f"{where} underflows to 0: raise the base value")
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
        depth=d,
        base_depth=config.base_depth,
        depth_rule=depth_rule.name,
        depth_alpha=depth_rule.alpha,
        residual_multiplier=depth_rule.residual_multiplier(m_depth),
        iterations=iterations,
        base_iterations=base_iterations,
        tokens=run_tokens,
        batch_tokens=run_batch,
        scale_eps=config.scale_eps,
        wd_length_exponent=config.wd_length_exponent,
        variants=MappingProxyType(variants),
    )
