"""The one place where width rules meet torch.

Works on a plain user ``nn.Module`` without changing its class. What hptransfer knows about each
parameter lives in a side table keyed by parameter name (:class:`ParamTable`), never on the
``nn.Parameter``: ``torch.compile``, FSDP, ``state_dict`` save/load and ``deepcopy`` keep working.

Typical use::

    plan = suggest(config, width=4096)
    model = MyModel(width=4096)
    table = classify(model, reference=MyModel(width=256))  # or overrides={...}
    apply_init(model, plan, table)
    apply_multipliers(model, plan, table)
    opt = torch.optim.AdamW(param_groups(model, plan, table), lr=plan.base_lr)
"""

from __future__ import annotations

import math
import re
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hptransfer.scaling.plan import Plan
from hptransfer.scaling.rules import ParamClass

__all__ = [
    "ClassificationError",
    "ParamInfo",
    "ParamTable",
    "adamw",
    "apply_init",
    "apply_multipliers",
    "classify",
    "meta_model",
    "param_groups",
    "parametrize",
    "scaled_lrs",
]


class ClassificationError(ValueError):
    """Parameters whose class cannot be told; the message names them and the fix."""


@dataclass(frozen=True)
class ParamInfo:
    """What hptransfer knows about one parameter."""

    name: str
    param_class: ParamClass
    shape: tuple[int, ...]
    reference_shape: tuple[int, ...] | None
    module_type: str
    reason: str

    @property
    def width_ratio(self) -> float | None:
        """How much the widest growing dim grew between the reference and this model."""
        if self.reference_shape is None:
            return None
        ratios = [a / b for a, b in zip(self.shape, self.reference_shape) if a != b]
        return max(ratios, key=lambda r: abs(math.log(r))) if ratios else 1.0


class ParamTable(Mapping[str, ParamInfo]):
    """Parameter name -> :class:`ParamInfo`, in the model's parameter order."""

    def __init__(self, infos: Mapping[str, ParamInfo]) -> None:
        self._infos = dict(infos)

    def __getitem__(self, name: str) -> ParamInfo:
        return self._infos[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def by_class(self, param_class: ParamClass | str) -> list[str]:
        pc = ParamClass(param_class)
        return [n for n, info in self._infos.items() if info.param_class is pc]

    def counts(self) -> dict[str, int]:
        return {str(c): len(self.by_class(c)) for c in ParamClass}

    def __repr__(self) -> str:
        return f"ParamTable({self.counts()})"


_VECTOR_MODULES = (nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
if hasattr(nn, "RMSNorm"):
    _VECTOR_MODULES = (*_VECTOR_MODULES, nn.RMSNorm)


_BIASED_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    """Parameter name -> the module that holds it (first owner for tied parameters)."""
    owners: dict[str, nn.Module] = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            owners.setdefault(full, module)
    return owners


def _classify_shape(
    shape: tuple[int, ...], ref: tuple[int, ...], module: nn.Module | None
) -> tuple[ParamClass, str]:
    if len(shape) != len(ref):
        raise ClassificationError(f"rank differs ({tuple(ref)} vs {tuple(shape)})")
    if isinstance(module, _VECTOR_MODULES) or len(shape) < 2:
        return ParamClass.VECTOR, f"{type(module).__name__ if module else 'vector'} / rank {len(shape)}"
    # torch convention for Linear, ConvNd and plain matrices: dim 0 = fan-out, dim 1 = fan-in.
    out_grows, in_grows = shape[0] != ref[0], shape[1] != ref[1]
    if any(a != b for a, b in zip(shape[2:], ref[2:])):
        raise ClassificationError(f"a kernel dimension changes with width ({tuple(ref)} vs {tuple(shape)})")
    if in_grows and out_grows:
        return ParamClass.HIDDEN, "fan-in and fan-out grow"
    if in_grows:
        return ParamClass.OUTPUT, "fan-in grows, fan-out fixed"
    if out_grows:
        return ParamClass.VECTOR, "fan-out grows, fan-in fixed (input layer)"
    return ParamClass.VECTOR, "no dimension grows"


def _compile_overrides(
    overrides: Mapping[str, ParamClass | str] | None,
) -> list[tuple[re.Pattern[str], ParamClass]]:
    out = []
    for pattern, cls in (overrides or {}).items():
        try:
            out.append((re.compile(pattern), ParamClass(cls)))
        except re.error as exc:
            raise ClassificationError(f"override pattern {pattern!r} is not a regex: {exc}") from None
        except ValueError:
            raise ClassificationError(
                f"override {pattern!r}: unknown class {cls!r}; use vector, hidden or output"
            ) from None
    return out


def classify(
    model: nn.Module,
    reference: nn.Module | None = None,
    *,
    overrides: Mapping[str, ParamClass | str] | None = None,
) -> ParamTable:
    """Tell each parameter's class from which of its dimensions grow with width.

    Args:
        model: the model to train (any ``nn.Module``).
        reference: the same architecture at another width (build it on the meta device with
            :func:`meta_model` to spend no memory). Like mup's base shapes: dims that differ
            grow with width.
        overrides: ``{regex: class}``, searched in parameter names, first match wins; takes
            precedence over shapes. Enough on its own when every parameter is covered.

    Raises:
        ClassificationError: a parameter neither the reference nor an override explains, or
            a reference with different parameter names.

    Example:
        >>> table = classify(MyModel(1024), reference=meta_model(MyModel, 256))  # doctest: +SKIP
    """
    rules = _compile_overrides(overrides)
    owners = _owners(model)
    ref_shapes: dict[str, tuple[int, ...]] | None = None
    if reference is not None:
        ref_shapes = {n: tuple(p.shape) for n, p in reference.named_parameters()}
        names = [n for n, _ in model.named_parameters()]
        missing = [n for n in names if n not in ref_shapes]
        extra = [n for n in ref_shapes if n not in set(names)]
        if missing or extra:
            raise ClassificationError(
                "reference model has different parameters: "
                + (f"missing {missing[:3]}" if missing else "")
                + (" " if missing and extra else "")
                + (f"extra {extra[:3]}" if extra else "")
                + "; build it from the same factory at another width"
            )
        if all(ref_shapes[n] == tuple(p.shape) for n, p in model.named_parameters()):
            raise ClassificationError(
                "reference model has the same shapes as the model, so no dimension is seen to "
                "grow; build the reference at a different width"
            )
    infos: dict[str, ParamInfo] = {}
    unexplained: list[str] = []
    for name, param in model.named_parameters():
        module = owners.get(name)
        shape = tuple(param.shape)
        ref = ref_shapes[name] if ref_shapes is not None else None
        forced = next((cls for pat, cls in rules if pat.search(name)), None)
        if forced is not None:
            cls, reason = forced, "override"
        elif ref is not None:
            try:
                cls, reason = _classify_shape(shape, ref, module)
            except ClassificationError as exc:
                raise ClassificationError(
                    f"cannot classify {name!r}: {exc}; add an override such as "
                    f"overrides={{{re.escape(name)!r}: 'hidden'}}"
                ) from None
        elif param.ndim < 2 or isinstance(module, _VECTOR_MODULES):
            cls, reason = ParamClass.VECTOR, "rank < 2 or embedding/norm"
        else:
            unexplained.append(name)
            continue
        infos[name] = ParamInfo(name, cls, shape, ref, type(module).__name__ if module else "", reason)
    if unexplained:
        shown = ", ".join(unexplained[:4]) + (" …" if len(unexplained) > 4 else "")
        raise ClassificationError(
            f"cannot classify {len(unexplained)} matrix parameter(s) ({shown}): pass "
            "reference=<the same model at another width> or overrides={regex: class}"
        )
    return ParamTable(infos)


def meta_model(factory: Callable[[int], nn.Module], width: int) -> nn.Module:
    """``factory(width)`` built on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return factory(width)


def _named_trainable(model: nn.Module, table: ParamTable) -> Iterator[tuple[str, nn.Parameter, ParamInfo]]:
    for name, param in model.named_parameters():
        if name not in table:
            raise ClassificationError(f"parameter {name!r} is not in the table; classify this model again")
        yield name, param, table[name]


def param_groups(
    model: nn.Module, plan: Plan, table: ParamTable, *, include_frozen: bool = False
) -> list[dict[str, Any]]:
    """AdamW param groups for ``plan``: one group per distinct (lr, weight decay).

    Each group's lr is ``plan.base_lr * group['lr_scale']``, so multiplicative schedulers
    (``LambdaLR``, warmup-cosine) keep the rule; see :func:`scaled_lrs` for schedulers that
    take absolute lrs. Groups also carry ``hp_classes`` (which classes they hold).
    """
    merged: dict[tuple[float, float], dict[str, Any]] = {}
    for _, param, info in _named_trainable(model, table):
        if not (param.requires_grad or include_frozen):
            continue
        hyper = plan[info.param_class]
        key = (hyper.lr, hyper.weight_decay)
        group = merged.setdefault(
            key,
            {
                "params": [],
                "lr": hyper.lr,
                "weight_decay": hyper.weight_decay,
                "lr_scale": hyper.lr_scale,
                "hp_classes": [],
            },
        )
        group["params"].append(param)
        if str(info.param_class) not in group["hp_classes"]:
            group["hp_classes"].append(str(info.param_class))
    return list(merged.values())


def adamw(model: nn.Module, plan: Plan, table: ParamTable, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`param_groups`; kwargs go to AdamW (betas, eps, fused…)."""
    return torch.optim.AdamW(param_groups(model, plan, table), lr=plan.base_lr, **kwargs)


def scaled_lrs(optimizer: torch.optim.Optimizer, lr: float) -> list[float]:
    """Per-group lrs for a scheduler that takes absolute values (``OneCycleLR(max_lr=...)``,
    ``CyclicLR``): ``lr`` is the base (hidden-at-base-width) value, each group gets its share.
    """
    return [lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups]


@torch.no_grad()
def apply_init(
    model: nn.Module, plan: Plan, table: ParamTable, *, generator: torch.Generator | None = None
) -> None:
    """Initialise every matrix (rank >= 2) as N(0, plan[class].init_std²); zero std means zeros.

    Biases of Linear/Conv layers start at zero: torch's default bias init shrinks as
    1/sqrt(fan_in), which muP's Θ(1) vector-like class does not want. Other rank-1 parameters
    (norm gains) keep their module's init. Repeatable: calling it twice gives the same
    distribution, not a rescaled one.
    """
    owners = _owners(model)
    for name, param, info in _named_trainable(model, table):
        if param.is_meta:
            continue
        if param.ndim < 2:
            if name.endswith("bias") and isinstance(owners.get(name), _BIASED_LAYERS):
                param.zero_()
            continue
        std = plan[info.param_class].init_std
        if std == 0:
            param.zero_()
        else:
            param.normal_(0.0, std, generator=generator)


_HOOKS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def apply_multipliers(model: nn.Module, plan: Plan, table: ParamTable) -> list[nn.Module]:
    """Multiply the input of each readout module by ``plan['output'].multiplier`` (a forward
    pre-hook, like mup's ``MuReadout``; the bias is not scaled). Re-applying replaces the
    hook, so the multiplier never compounds. Returns the modules hooked."""
    owners = _owners(model)
    mult = plan[ParamClass.OUTPUT].multiplier
    hooked: list[nn.Module] = []
    for name in table.by_class(ParamClass.OUTPUT):
        module = owners[name]
        if module in hooked:
            continue
        old = _HOOKS.pop(module, None)
        if old is not None:
            old.remove()
        if mult != 1.0:

            def scale(_mod: nn.Module, args: tuple[Any, ...], m: float = mult) -> tuple[Any, ...]:
                return (args[0] * m, *args[1:])

            _HOOKS[module] = module.register_forward_pre_hook(scale)
        hooked.append(module)
    return hooked


def _has_attention(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.MultiheadAttention) or re.search(r"attn|attention", type(m).__name__, re.I)
        for m in model.modules()
    )


def parametrize(
    model: nn.Module,
    plan: Plan,
    reference: nn.Module | None = None,
    *,
    overrides: Mapping[str, ParamClass | str] | None = None,
    init: bool = True,
    attention_handled: bool = False,
) -> ParamTable:
    """Classify, initialise and hook ``model`` for ``plan`` in one call; returns the table.

    Under muP, attention logits must be scaled by ``plan.attention_scale`` (∝ 1/d_head); a
    module's own ``1/sqrt(d_head)`` cannot be seen or changed from outside, so this warns when
    the model has attention and ``attention_handled`` is False.
    """
    table = classify(model, reference, overrides=overrides)
    if init:
        apply_init(model, plan, table)
    apply_multipliers(model, plan, table)
    if plan.rule.is_mup and not attention_handled and _has_attention(model):
        warnings.warn(
            "model has attention: under muP scale the logits by plan.attention_scale "
            f"({plan.attention_scale:g} at width {plan.width}, ∝ 1/d_head) instead of "
            "1/sqrt(d_head); pass attention_handled=True once it does",
            stacklevel=2,
        )
    return table
