"""Width-transfer rules as data: per parameter class, one exponent of the width multiplier each
for learning rate, weight decay, init std and forward multiplier.

Pure Python, no torch: ``hptransfer suggest`` imports only this and ``config``.

Conventions
-----------
* ``m = width / base_width`` is the width multiplier.
* Every quantity is ``base_value * m ** exponent``; at ``m == 1`` every rule returns the base
  hyperparameters exactly.
* Weight decay is PyTorch AdamW's ``weight_decay``: the step multiplies it by the lr
  (``p <- p - lr*wd*p - lr*update``). Under that convention the steady-state top singular value
  of a matrix is about ``sqrt(lr/wd) * d**0.75`` (Fan et al., arXiv 2510.15262), and the AdamW
  timescale is ``tau = 1/(lr*wd)`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from types import MappingProxyType
from typing import Literal

__all__ = [
    "OPTIMIZERS",
    "RULES",
    "WD_EXPONENTS",
    "ClassExponents",
    "ParamClass",
    "ReadoutStyle",
    "ScalingRule",
    "get_rule",
]


class ParamClass(str, Enum):
    """How a parameter's shape depends on width, which decides how its hyperparameters scale.

    * ``VECTOR``: one width-growing dimension or none, acting like a vector: embeddings,
      biases, norm gains, input-layer weights (fixed fan-in).
    * ``HIDDEN``: both fan-in and fan-out grow with width (attention and MLP matrices).
    * ``OUTPUT``: fan-in grows, fan-out is fixed (the readout / unembedding).
    """

    VECTOR = "vector"
    HIDDEN = "hidden"
    OUTPUT = "output"

    def __str__(self) -> str:
        return self.value


ReadoutStyle = Literal["lr", "multiplier"]
OptimizerKind = Literal["adamw", "adam", "sgd"]

#: Optimizers a rule can target, and the torch class each one means.
#: ``adamw``: ``torch.optim.AdamW`` (decoupled decay, ``p <- p - lr*wd*p``);
#: ``adam``: ``torch.optim.Adam`` with coupled L2 (``grad + wd*p``, then Adam);
#: ``sgd``: ``torch.optim.SGD`` (coupled L2, per-step decay ``lr*wd``).
OPTIMIZERS: Mapping[str, str] = MappingProxyType(
    {"adamw": "torch.optim.AdamW", "adam": "torch.optim.Adam", "sgd": "torch.optim.SGD"}
)

# Named weight-decay width exponents e in lambda = lambda_base * m**e for matrix-like params.
WD_EXPONENTS: Mapping[str, float] = MappingProxyType(
    {
        # The AdamW-timescale rule: tau = 1/(lr*wd) constant per step under muP's lr ~ 1/m.
        # Same as mup's MuAdamW. The product brief's rule and our default.
        "linear": 1.0,
        # Fan et al. (arXiv 2510.15262): sigma_max ~ sqrt(lr/wd) d^0.75 with lr ~ 1/d gives
        # width-invariant sigma_max when wd ~ sqrt(d).
        "sqrt": 0.5,
        # Standard-parametrisation habit: one wd for every width.
        "constant": 0.0,
    }
)


@dataclass(frozen=True)
class ClassExponents:
    """Exponents of ``m`` for one parameter class, and whether weight decay applies at all."""

    lr: float = 0.0
    wd: float = 0.0
    init_std: float = 0.0
    multiplier: float = 0.0
    decay: bool = True


@dataclass(frozen=True)
class ScalingRule:
    """A width-transfer rule: a small table of exponents, one row per :class:`ParamClass`.

    Build presets with :func:`get_rule` or custom rules with :meth:`mup`.

    Example:
        >>> rule = get_rule("mup-wd-sqrt")
        >>> rule.exponents[ParamClass.HIDDEN].wd
        0.5
    """

    name: str
    exponents: Mapping[ParamClass, ClassExponents]
    description: str = ""
    readout: ReadoutStyle = "lr"
    wd_exponent: float | None = None  # for matrix-like params; None for sp
    attention_exponent: float = 0.5  # attention logits scaled by d_head ** -attention_exponent
    optimizer: OptimizerKind = "adamw"

    @property
    def is_mup(self) -> bool:
        return self.attention_exponent == 1.0

    @classmethod
    def mup(
        cls,
        wd_exponent: float | None,
        *,
        readout: ReadoutStyle = "lr",
        optimizer: OptimizerKind = "adamw",
        name: str | None = None,
        description: str = "",
    ) -> ScalingRule:
        """muP (Tensor Programs V, table 3) with a weight-decay width exponent ``wd_exponent``
        on matrix-like parameters, for ``optimizer`` (``adamw``, ``adam`` or ``sgd``).

        ``wd_exponent=None`` keeps weight decay as it is at every width on every class
        (the ``mup`` preset); any number ``e`` sets ``lambda = lambda_base * m**e`` on hidden
        matrices under AdamW and zero weight decay on vector-like parameters.

        ``readout="lr"``: the readout trains at ``lr/m`` with init std ``~ 1/fan_in`` and no
        width multiplier. ``readout="multiplier"``: mup-package style, output multiplied by
        ``1/m`` in the forward pass, init kept. The two are the same function (``W' = W/m``),
        so the multiplier style carries the lr and weight decay that make them equal. Never
        both: that double-scales the readout.

        Learning rates per optimizer (``m`` = width multiplier), as in mup's ``MuAdam`` /
        ``MuSGD``:

        ============  ========  ========  =====================  ==========================
        optimizer     vector    hidden    readout (``lr``)       readout (``multiplier``)
        ============  ========  ========  =====================  ==========================
        adamw, adam   1         1/m       1/m                    1
        sgd           m         1         1/m                    m
        ============  ========  ========  =====================  ==========================

        Weight decay keeps the per-step decay rate ``lr*wd`` of the AdamW rule on every
        optimizer: coupled Adam uses AdamW's numbers (as mup's ``MuAdam`` does); SGD's decay
        step is ``lr*wd`` too, so its ``wd`` exponent is AdamW's plus the gap between the two
        lr exponents (``linear`` then keeps ``lr*wd`` constant per class, as mup's ``MuSGD``).
        """
        if readout not in ("lr", "multiplier"):
            raise ValueError(f"readout must be 'lr' or 'multiplier', got {readout!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if wd_exponent is not None and not math.isfinite(wd_exponent):
            raise ValueError(f"wd_exponent must be a finite number, got {wd_exponent!r}")
        e = 0.0 if wd_exponent is None else float(wd_exponent)
        # AdamW rows (lr, wd exponents); the other optimizers are derived from them below.
        adamw_rows: dict[ParamClass, tuple[float, float]] = {
            ParamClass.VECTOR: (0.0, 0.0),
            ParamClass.HIDDEN: (-1.0, e),
            ParamClass.OUTPUT: (-1.0, e) if readout == "lr" else (0.0, e - 1.0),
        }
        lr_exp = dict(_LR_EXPONENTS[optimizer])
        if readout == "multiplier":
            lr_exp[ParamClass.OUTPUT] = lr_exp[ParamClass.VECTOR]  # a vector-like weight times 1/m
        # Same per-step decay rate lr*wd as the AdamW rule: wd exponent shifts by the lr gap.
        wd_exp = {c: adam_lr + adam_wd - lr_exp[c] for c, (adam_lr, adam_wd) in adamw_rows.items()}
        vector = ClassExponents(lr=lr_exp[ParamClass.VECTOR], wd=0.0, init_std=0.0, decay=wd_exponent is None)
        hidden = ClassExponents(lr=lr_exp[ParamClass.HIDDEN], wd=wd_exp[ParamClass.HIDDEN], init_std=-0.5)
        if readout == "lr":
            output = ClassExponents(lr=lr_exp[ParamClass.OUTPUT], wd=wd_exp[ParamClass.OUTPUT], init_std=-1.0)
        else:
            # W_eff = W/m: the same function as the lr style with W' = W/m.
            output = ClassExponents(
                lr=lr_exp[ParamClass.OUTPUT], wd=wd_exp[ParamClass.OUTPUT], init_std=0.0, multiplier=-1.0
            )
        if name is None:
            name = "mup" if wd_exponent is None else f"mup-wd-{_exponent_label(wd_exponent)}"
            if readout == "multiplier":
                name += "+readout-mult"
        return cls(
            name=name,
            exponents=MappingProxyType(
                {ParamClass.VECTOR: vector, ParamClass.HIDDEN: hidden, ParamClass.OUTPUT: output}
            ),
            description=description,
            readout=readout,
            wd_exponent=wd_exponent,
            attention_exponent=1.0,
            optimizer=optimizer,
        )

    def with_optimizer(self, optimizer: OptimizerKind) -> ScalingRule:
        """The same rule for another optimizer (``adamw``, ``adam`` or ``sgd``)."""
        if optimizer == self.optimizer:
            return self
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if not self.is_mup:
            return replace(self, optimizer=optimizer)  # sp: nothing scales with width
        return ScalingRule.mup(
            self.wd_exponent,
            readout=self.readout,
            optimizer=optimizer,
            name=self.name,
            description=self.description,
        )

    def with_readout(self, readout: ReadoutStyle) -> ScalingRule:
        if readout == self.readout or not self.is_mup:
            return self  # sp scales nothing with width, so the readout style changes nothing
        base = self.name.removesuffix("+readout-mult")
        return ScalingRule.mup(
            self.wd_exponent,
            readout=readout,
            optimizer=self.optimizer,
            name=base + ("+readout-mult" if readout == "multiplier" else ""),
            description=self.description,
        )


# muP learning-rate exponents of m per optimizer (readout in the "lr" style).
_LR_EXPONENTS: Mapping[str, Mapping[ParamClass, float]] = MappingProxyType(
    {
        "adamw": {ParamClass.VECTOR: 0.0, ParamClass.HIDDEN: -1.0, ParamClass.OUTPUT: -1.0},
        "adam": {ParamClass.VECTOR: 0.0, ParamClass.HIDDEN: -1.0, ParamClass.OUTPUT: -1.0},
        "sgd": {ParamClass.VECTOR: 1.0, ParamClass.HIDDEN: 0.0, ParamClass.OUTPUT: -1.0},
    }
)


def _exponent_label(e: float) -> str:
    for label, value in WD_EXPONENTS.items():
        if e == value:
            return label
    return f"{e:g}"


def _sp() -> ScalingRule:
    same = ClassExponents()
    return ScalingRule(
        name="sp",
        exponents=MappingProxyType(
            {ParamClass.VECTOR: same, ParamClass.HIDDEN: same, ParamClass.OUTPUT: same}
        ),
        description="standard parametrisation: every hyperparameter the same at every width",
        wd_exponent=None,
        attention_exponent=0.5,
    )


RULES: Mapping[str, ScalingRule] = MappingProxyType(
    {
        "sp": _sp(),
        "mup": ScalingRule.mup(
            None, description="muP learning rates for Adam; weight decay unchanged with width"
        ),
        "mup-wd-linear": ScalingRule.mup(
            WD_EXPONENTS["linear"],
            description="muP + wd ~ m on matrices (AdamW timescale constant; mup's MuAdamW)",
        ),
        "mup-wd-sqrt": ScalingRule.mup(
            WD_EXPONENTS["sqrt"],
            description="muP + wd ~ sqrt(m) on matrices (Fan et al., arXiv 2510.15262)",
        ),
        "mup-wd-constant": ScalingRule.mup(
            WD_EXPONENTS["constant"],
            description="muP + the same wd at every width on matrices, none on vectors",
        ),
    }
)

DEFAULT_RULE = "mup-wd-linear"

# Short names people type: `--rule sqrt` means the muP rule with that wd exponent.
_ALIASES = {
    "linear": "mup-wd-linear",
    "sqrt": "mup-wd-sqrt",
    "constant": "mup-wd-constant",
    "mup-wd-const": "mup-wd-constant",
    "standard": "sp",
}


def get_rule(
    name: str,
    *,
    wd_exponent: float | None = None,
    readout: ReadoutStyle | None = None,
    optimizer: OptimizerKind | None = None,
) -> ScalingRule:
    """Look up a preset by name (``sp``, ``mup``, ``mup-wd-linear``, ``mup-wd-sqrt``,
    ``mup-wd-constant``; short forms ``linear``, ``sqrt``, ``constant``), or ``custom`` with an
    explicit ``wd_exponent``.

    Raises:
        ValueError: unknown name, or a ``wd_exponent`` given with a preset that fixes it.
    """
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key == "custom":
        if wd_exponent is None:
            raise ValueError("rule 'custom' needs a wd_exponent (e.g. 0.75)")
        rule = ScalingRule.mup(wd_exponent)
    elif key in RULES:
        rule = RULES[key]
        if wd_exponent is not None and wd_exponent != rule.wd_exponent:
            if not rule.is_mup:
                raise ValueError("rule 'sp' takes no wd_exponent; use 'custom' or a mup rule")
            fixed = "none" if rule.wd_exponent is None else f"{rule.wd_exponent:g}"
            raise ValueError(
                f"rule {rule.name!r} fixes the wd exponent ({fixed}), so wd_exponent={wd_exponent:g} "
                "contradicts it; use rule 'custom' with that wd_exponent"
            )
    else:
        known = ", ".join([*RULES, "custom"])
        raise ValueError(f"unknown rule {name!r}; choose one of: {known}")
    if readout is not None:
        rule = rule.with_readout(readout)
    if optimizer is not None:
        rule = rule.with_optimizer(optimizer)
    return rule
