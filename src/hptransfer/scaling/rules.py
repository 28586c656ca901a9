"""Transfer rules as data: per parameter class, one exponent of the width multiplier each for
learning rate, weight decay, init std, forward multiplier and Adam epsilon; per class again, one
exponent of the depth multiplier (:class:`DepthRule`: CompleteP, depth-muP).

Pure Python, no torch: ``hptransfer suggest`` imports only this and ``config``.

Conventions
-----------
* ``m = width / base_width`` is the width multiplier, ``m_L = depth / base_depth`` the depth
  multiplier.
* Every quantity is ``base_value * m ** exponent * m_L ** depth_exponent``; at ``m == m_L == 1``
  every rule returns the base hyperparameters exactly.
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
from typing import Literal, get_args

__all__ = [
    "DEPTH_CLASSES",
    "DEPTH_RULES",
    "MUON_ADJUST_LR_FNS",
    "OPTIMIZERS",
    "READOUT_STYLES",
    "RULES",
    "WD_EXPONENTS",
    "ClassExponents",
    "DepthRule",
    "ParamClass",
    "ReadoutStyle",
    "ScalingRule",
    "get_depth_rule",
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
#: The readout styles, in the order the docs name them.
READOUT_STYLES: tuple[str, ...] = get_args(ReadoutStyle)
OptimizerKind = Literal["adamw", "adam", "sgd", "muon"]
MuonAdjust = Literal["original", "match_rms_adamw"]

#: Optimizers a rule can target, and the torch class each one means.
#: ``adamw``: ``torch.optim.AdamW`` (decoupled decay, ``p <- p - lr*wd*p``);
#: ``adam``: ``torch.optim.Adam`` with coupled L2 (``grad + wd*p``, then Adam);
#: ``sgd``: ``torch.optim.SGD`` (coupled L2, per-step decay ``lr*wd``);
#: ``muon``: ``torch.optim.Muon`` for hidden matrices (decoupled decay ``p <- p - lr*wd*p`` with
#: the group's lr before Muon's shape adjustment), ``torch.optim.AdamW`` for every other class.
OPTIMIZERS: Mapping[str, str] = MappingProxyType(
    {
        "adamw": "torch.optim.AdamW",
        "adam": "torch.optim.Adam",
        "sgd": "torch.optim.SGD",
        "muon": "torch.optim.Muon (hidden matrices) + torch.optim.AdamW (the rest)",
    }
)

#: ``torch.optim.Muon(adjust_lr_fn=...)`` -> width exponent of the hidden-matrix lr.
#:
#: Muon's update ``O`` is orthogonalised (Newton-Schulz), so its spectral norm is about 1 at
#: every width; torch then multiplies the lr by a shape factor: ``"original"`` (torch's default,
#: ``adjust_lr_fn=None``) by ``sqrt(max(1, fan_out/fan_in))``, ``"match_rms_adamw"`` by
#: ``0.2*sqrt(max(fan_out, fan_in))``. The spectral condition for feature learning (Yang, Simon &
#: Bernstein 2023, arXiv 2310.17813) asks ``||dW||_2 = Theta(sqrt(fan_out/fan_in)) = Theta(1)``
#: for a hidden matrix (both fans grow with ``m``). ``original``: ``||dW||_2 = lr*const``, so
#: ``lr ~ m**0``. ``match_rms_adamw``: ``||dW||_2 = lr*0.2*sqrt(max fan) ~ lr*m**0.5``, so
#: ``lr ~ m**-0.5``.
MUON_ADJUST_LR_FNS: Mapping[str, float] = MappingProxyType({"original": 0.0, "match_rms_adamw": -0.5})

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
    """Exponents of ``m`` (or of ``m_L`` in a :class:`DepthRule`) for one parameter class, and
    whether weight decay applies at all.

    ``eps`` is the exponent of Adam's epsilon; it is used only when the config scales epsilon
    (``scale_eps``). Under muP the gradients of some classes shrink with width (Everett et al.,
    arXiv 2407.05872), and a fixed epsilon then dominates ``sqrt(v)`` at large width: scaling
    epsilon like the class's gradient keeps Adam's update the same.
    """

    lr: float = 0.0
    wd: float = 0.0
    init_std: float = 0.0
    multiplier: float = 0.0
    decay: bool = True
    eps: float = 0.0


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
    muon_adjust_lr_fn: MuonAdjust = "original"  # torch.optim.Muon's adjust_lr_fn (optimizer "muon")

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
        muon_adjust_lr_fn: MuonAdjust = "original",
    ) -> ScalingRule:
        """muP (Tensor Programs V, table 3) with a weight-decay width exponent ``wd_exponent``
        on matrix-like parameters, for ``optimizer`` (``adamw``, ``adam``, ``sgd`` or ``muon``).

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

        =============================  ======  ==========  ================  ====================
        optimizer                      vector  hidden      readout (``lr``)  readout (``multiplier``)
        =============================  ======  ==========  ================  ====================
        adamw, adam                    1       1/m         1/m               1
        sgd                            m       1           1/m               m
        muon (``original``)            1       1           1/m               1
        muon (``match_rms_adamw``)     1       m^-1/2      1/m               1
        =============================  ======  ==========  ================  ====================

        Under ``muon`` only hidden matrices use Muon (see :data:`MUON_ADJUST_LR_FNS` for the
        derivation); vector-like parameters and the readout keep AdamW's rows.

        Weight decay keeps the per-step decay rate ``lr*wd`` of the AdamW rule on every
        optimizer: coupled Adam uses AdamW's numbers (as mup's ``MuAdam`` does); SGD's and
        Muon's decay step is ``lr*wd`` too, so their ``wd`` exponent is AdamW's lr exponent plus
        AdamW's wd exponent minus their own lr exponent (``linear`` then keeps ``lr*wd``
        constant per class, as mup's ``MuSGD``).

        Adam epsilon (used when the config sets ``scale_eps``) scales like the class's gradient
        under muP: ``1/m`` for vector-like and hidden parameters (the backward signal through the
        ``1/m`` readout is ``Theta(1/m)`` per coordinate), ``1`` for an ``lr``-style readout
        (its gradient is ``Theta(1)``), ``1/m`` for a ``multiplier``-style readout. SGD has no
        epsilon and Muon's is Newton-Schulz's norm clamp, not Adam's: exponent 0 there.
        """
        if readout not in READOUT_STYLES:
            raise ValueError(f"readout must be {' or '.join(map(repr, READOUT_STYLES))}, got {readout!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if muon_adjust_lr_fn not in MUON_ADJUST_LR_FNS:
            raise ValueError(
                f"muon_adjust_lr_fn must be one of {', '.join(MUON_ADJUST_LR_FNS)}, got {muon_adjust_lr_fn!r}"
            )
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
        if optimizer == "muon":
            lr_exp[ParamClass.HIDDEN] = MUON_ADJUST_LR_FNS[muon_adjust_lr_fn]
        if readout == "multiplier":
            lr_exp[ParamClass.OUTPUT] = lr_exp[ParamClass.VECTOR]  # a vector-like weight times 1/m
        # Same per-step decay rate lr*wd as the AdamW rule: wd exponent shifts by the lr gap.
        wd_exp = {c: adam_lr + adam_wd - lr_exp[c] for c, (adam_lr, adam_wd) in adamw_rows.items()}
        # Adam epsilon ~ the class's gradient (only Adam-type classes have one).
        adam_eps = {ParamClass.VECTOR: -1.0, ParamClass.HIDDEN: -1.0, ParamClass.OUTPUT: 0.0}
        if readout == "multiplier":
            adam_eps[ParamClass.OUTPUT] = -1.0  # gradient of W = m*W' is grad(W')/m
        eps_exp = {c: e if _HAS_ADAM_EPS[optimizer][c] else 0.0 for c, e in adam_eps.items()}
        vector = ClassExponents(
            lr=lr_exp[ParamClass.VECTOR],
            wd=0.0,
            init_std=0.0,
            decay=wd_exponent is None,
            eps=eps_exp[ParamClass.VECTOR],
        )
        hidden = ClassExponents(
            lr=lr_exp[ParamClass.HIDDEN],
            wd=wd_exp[ParamClass.HIDDEN],
            init_std=-0.5,
            eps=eps_exp[ParamClass.HIDDEN],
        )
        if readout == "lr":
            output = ClassExponents(
                lr=lr_exp[ParamClass.OUTPUT],
                wd=wd_exp[ParamClass.OUTPUT],
                init_std=-1.0,
                eps=eps_exp[ParamClass.OUTPUT],
            )
        else:
            # W_eff = W/m: the same function as the lr style with W' = W/m.
            output = ClassExponents(
                lr=lr_exp[ParamClass.OUTPUT],
                wd=wd_exp[ParamClass.OUTPUT],
                init_std=0.0,
                multiplier=-1.0,
                eps=eps_exp[ParamClass.OUTPUT],
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
            muon_adjust_lr_fn=muon_adjust_lr_fn,
        )

    def with_optimizer(
        self, optimizer: OptimizerKind, muon_adjust_lr_fn: MuonAdjust | None = None
    ) -> ScalingRule:
        """The same rule for another optimizer (``adamw``, ``adam``, ``sgd`` or ``muon``;
        ``muon_adjust_lr_fn``: torch Muon's ``adjust_lr_fn``, default: the rule's own)."""
        adjust = self.muon_adjust_lr_fn if muon_adjust_lr_fn is None else muon_adjust_lr_fn
        if optimizer == self.optimizer and adjust == self.muon_adjust_lr_fn:
            return self
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if adjust not in MUON_ADJUST_LR_FNS:
            raise ValueError(
                f"muon_adjust_lr_fn must be one of {', '.join(MUON_ADJUST_LR_FNS)}, got {adjust!r}"
            )
        if not self.is_mup:
            # sp: nothing scales with width
            return replace(self, optimizer=optimizer, muon_adjust_lr_fn=adjust)
        return ScalingRule.mup(
            self.wd_exponent,
            readout=self.readout,
            optimizer=optimizer,
            name=self.name,
            description=self.description,
            muon_adjust_lr_fn=adjust,
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
            muon_adjust_lr_fn=self.muon_adjust_lr_fn,
        )


# muP learning-rate exponents of m per optimizer (readout in the "lr" style).
_LR_EXPONENTS: Mapping[str, Mapping[ParamClass, float]] = MappingProxyType(
    {
        "adamw": {ParamClass.VECTOR: 0.0, ParamClass.HIDDEN: -1.0, ParamClass.OUTPUT: -1.0},
        "adam": {ParamClass.VECTOR: 0.0, ParamClass.HIDDEN: -1.0, ParamClass.OUTPUT: -1.0},
        "sgd": {ParamClass.VECTOR: 1.0, ParamClass.HIDDEN: 0.0, ParamClass.OUTPUT: -1.0},
        # Muon on hidden matrices (adjust_lr_fn "original"; MUON_ADJUST_LR_FNS for the other),
        # AdamW on the rest.
        "muon": {ParamClass.VECTOR: 0.0, ParamClass.HIDDEN: 0.0, ParamClass.OUTPUT: -1.0},
    }
)

# Which classes an optimizer trains with an Adam epsilon.
_HAS_ADAM_EPS: Mapping[str, Mapping[ParamClass, bool]] = MappingProxyType(
    {
        "adamw": dict.fromkeys(ParamClass, True),
        "adam": dict.fromkeys(ParamClass, True),
        "sgd": dict.fromkeys(ParamClass, False),
        "muon": {ParamClass.VECTOR: True, ParamClass.HIDDEN: False, ParamClass.OUTPUT: True},
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
    muon_adjust_lr_fn: MuonAdjust | None = None,
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
    if optimizer is not None or muon_adjust_lr_fn is not None:
        rule = rule.with_optimizer(optimizer or rule.optimizer, muon_adjust_lr_fn)
    return rule


# -- depth ---------------------------------------------------------------------------------------
#: The parameter classes a depth rule tells apart. ``hidden``: matrices inside residual blocks
#: (attention and MLP weights); ``block_vector``: vector-like parameters inside residual blocks
#: (norm gains and biases of the blocks); ``vector``: vector-like parameters outside the blocks
#: (embeddings, the final norm); ``output``: the readout.
DEPTH_CLASSES: tuple[str, ...] = ("hidden", "block_vector", "vector", "output")


@dataclass(frozen=True)
class DepthRule:
    """How hyperparameters follow depth: each residual branch is multiplied by
    ``m_L ** residual_exponent`` (``m_L = depth / base_depth``, ``residual_exponent = -alpha``)
    and, per class of :data:`DEPTH_CLASSES`, lr, weight decay, init std and Adam epsilon by
    ``m_L ** exponent``.

    The presets are the Adam/AdamW rows of Dey et al., "Don't be lazy: CompleteP enables
    compute-efficient deep transformers" (NeurIPS 2025, arXiv 2505.01618, Table 1; reference code
    EleutherAI/nanoGPT-mup, branch ``completep``, ``configure_optimizers``):

    ================  =============  =============  ========  ==========
    class             lr             wd (AdamW)     init std  Adam eps
    ================  =============  =============  ========  ==========
    hidden            m_L^(alpha-1)  m_L^(1-alpha)  1         m_L^-alpha
    block_vector      m_L^(alpha-1)  m_L^(1-alpha)  1         m_L^-alpha
    vector            1              1              1         1
    output            1              1              1         1
    ================  =============  =============  ========  ==========

    ``alpha = 1`` is CompleteP (no depth factor on lr or wd at all; branch ``1/m_L``),
    ``alpha = 1/2`` depth-muP (Yang et al., Tensor Programs VI; branch ``1/sqrt(m_L)``, block lr
    ``1/sqrt(m_L)``). Weight decay keeps the per-step decay ``lr*wd`` of every class, the same
    principle as the width rows; the reference code leaves wd without a depth factor, which is
    the same thing at ``alpha = 1``. Epsilon: a block's gradients carry the branch multiplier
    ``m_L^-alpha``, the reference code scales its one global epsilon by ``m_L^-alpha`` (with the
    width's ``1/m``); here only the classes inside blocks take the depth factor, since the
    gradients of the embeddings, final norm and readout do not shrink with depth. Init: no depth
    factor (the branch multiplier does that job).

    Other optimizers (:meth:`for_optimizer`): Muon's hidden update is normalised like Adam's, so
    the rows are the same (no epsilon on Muon's matrices). SGD's update is not normalised: a
    block's gradient carries ``m_L^-alpha`` and its update acts through the branch multiplier
    again, so its block lr is ``m_L^(2*alpha-1)`` (wd exponent ``1-2*alpha`` to keep ``lr*wd``)
    and it has no epsilon.
    """

    name: str
    alpha: float
    exponents: Mapping[str, ClassExponents]
    residual_exponent: float = 0.0
    description: str = ""
    optimizer: OptimizerKind = "adamw"

    @classmethod
    def from_alpha(
        cls,
        alpha: float,
        *,
        name: str | None = None,
        description: str = "",
        optimizer: OptimizerKind = "adamw",
    ) -> DepthRule:
        """The rows for residual branches scaled by ``m_L ** -alpha``, for ``optimizer``."""
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1] (1/2: depth-muP, 1: CompleteP), got {alpha!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        a = float(alpha)
        adam_like = ClassExponents(lr=a - 1.0, wd=1.0 - a, init_std=0.0, eps=-a)
        sgd_like = ClassExponents(lr=2.0 * a - 1.0, wd=1.0 - 2.0 * a, init_std=0.0, eps=0.0)
        block = {
            "adamw": (adam_like, adam_like),
            "adam": (adam_like, adam_like),
            "sgd": (sgd_like, sgd_like),
            "muon": (replace(adam_like, eps=0.0), adam_like),
        }[optimizer]
        if a == 0.0:  # no depth rule: every exponent exactly 0 (not -0.0 or 2*0-1 for sgd)
            block = (ClassExponents(), ClassExponents())
        rows = {
            "hidden": block[0],
            "block_vector": block[1],
            "vector": ClassExponents(),
            "output": ClassExponents(),
        }
        return cls(
            name=name if name is not None else f"alpha-{a:g}",
            alpha=a,
            exponents=MappingProxyType(rows),
            residual_exponent=-a if a else 0.0,
            description=description,
            optimizer=optimizer,
        )

    def for_optimizer(self, optimizer: OptimizerKind) -> DepthRule:
        """The same rule (same ``alpha``) for another optimizer."""
        if optimizer == self.optimizer:
            return self
        return DepthRule.from_alpha(
            self.alpha, name=self.name, description=self.description, optimizer=optimizer
        )

    def residual_multiplier(self, depth_mult: float) -> float:
        """The residual-branch multiplier ``m_L ** residual_exponent`` (1 at the base depth)."""
        return float(depth_mult**self.residual_exponent)


DEPTH_RULES: Mapping[str, DepthRule] = MappingProxyType(
    {
        "none": DepthRule.from_alpha(0.0, name="none", description="no depth rule: nothing follows depth"),
        "depth-mup": DepthRule.from_alpha(
            0.5,
            name="depth-mup",
            description="depth-muP (alpha = 1/2): branches x 1/sqrt(m_L), block lr x 1/sqrt(m_L)",
        ),
        "completep": DepthRule.from_alpha(
            1.0,
            name="completep",
            description="CompleteP (alpha = 1; Dey et al., arXiv 2505.01618): branches x 1/m_L",
        ),
    }
)

_DEPTH_ALIASES = {
    "complete-p": "completep",
    "depth-mup-0.5": "depth-mup",
    "depthmup": "depth-mup",
    "sp": "none",
}


def get_depth_rule(name: str, *, optimizer: OptimizerKind | None = None) -> DepthRule:
    """A depth preset by name: ``none``, ``depth-mup`` (alpha 1/2) or ``completep`` (alpha 1),
    for ``optimizer`` (default AdamW).

    Raises:
        ValueError: unknown name.
    """
    if not isinstance(name, str):
        raise ValueError(f"depth rule must be a name ({', '.join(DEPTH_RULES)}), got {name!r}")
    key = name.strip().lower()
    key = _DEPTH_ALIASES.get(key, key)
    if key not in DEPTH_RULES:
        raise ValueError(f"unknown depth rule {name!r}; choose one of: {', '.join(DEPTH_RULES)}")
    rule = DEPTH_RULES[key]
    return rule if optimizer is None else rule.for_optimizer(optimizer)
