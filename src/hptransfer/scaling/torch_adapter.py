"""The one place where width rules meet torch.

Works on a plain user ``nn.Module`` without changing its class. What hptransfer knows about each
parameter lives in a side table keyed by parameter name (:class:`ParamTable`), never on the
``nn.Parameter``: ``torch.compile``, FSDP, ``state_dict`` save/load and ``deepcopy`` keep working.

Typical use::

    plan = suggest(config, width=4096)
    model = make_model(4096)
    table = parametrize(model, plan, reference=make_model)   # the factory: any width works
    opt = torch.optim.AdamW(param_groups(model, plan, table), lr=plan.base_lr)
    opt = build_optimizer(model, plan, table)   # the plan's optimizer: AdamW, Adam, SGD, Muon+AdamW

Init policy: the model keeps the init its author wrote. At the base width nothing changes
(except what the config asks for: an explicit ``init_std``, a zero readout, an init scale). At
other widths only the muP correction is applied, relative to the model's own init and per
class: a fan-in-scaled init (torch's default) already scales right for hidden matrices, a
fixed-std init (GPT-2's ``normal_(0, 0.02)``) is rescaled by ``m**-0.5``, the readout takes its
extra factor, vector-like parameters keep their scale.
"""

from __future__ import annotations

import math
import re
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from hptransfer.scaling.plan import Plan
from hptransfer.scaling.rules import ParamClass

__all__ = [
    "AttentionProbe",
    "ClassificationError",
    "ParamInfo",
    "ParamTable",
    "ResidualBranches",
    "adamw",
    "apply_init",
    "apply_multipliers",
    "apply_residual_multipliers",
    "build_optimizer",
    "check_attention",
    "classify",
    "find_residual_branches",
    "hidden_kind",
    "hidden_kinds",
    "meta_model",
    "param_groups",
    "parametrize",
    "scaled_lrs",
]

Reference = nn.Module | Callable[[int], nn.Module]


class ClassificationError(ValueError):
    """Parameters whose class cannot be told; the message names them and the fix."""


@dataclass(frozen=True)
class ParamInfo:
    """What hptransfer knows about one parameter.

    ``fan_in_grows``: the dimension the layer reads from grows with width (decides how a
    fan-in-scaled init moves with width). ``readouts``: for a weight tied between an embedding
    and one or more readout modules, the names of those modules (their output is scaled by
    ``plan.tied_output_multiplier``). ``in_block``: inside a residual block (set by
    :func:`parametrize` under a depth rule; a vector-like parameter there, a block's norm gain or
    bias, takes ``plan.group_for("vector", "block")``).
    """

    name: str
    param_class: ParamClass
    shape: tuple[int, ...]
    reference_shape: tuple[int, ...] | None
    module_type: str
    reason: str
    fan_in_grows: bool = False
    readouts: tuple[str, ...] = ()
    in_block: bool = False

    @property
    def grows(self) -> bool | None:
        """Whether any dimension grows with width (None without a reference)."""
        return None if self.reference_shape is None else self.shape != self.reference_shape

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

    def tied(self) -> list[str]:
        """Names of weights shared between an embedding and a readout."""
        return [n for n, info in self._infos.items() if info.readouts]

    def counts(self) -> dict[str, int]:
        return {str(c): len(self.by_class(c)) for c in ParamClass}

    def __repr__(self) -> str:
        return f"ParamTable({self.counts()})"


_VECTOR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
)
if hasattr(nn, "RMSNorm"):
    _VECTOR_MODULES = (*_VECTOR_MODULES, nn.RMSNorm)

_BIASED_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def _fan_in_dim(module: nn.Module | None) -> int | None:
    """Which weight dimension a layer reads from, or None where its orientation is unknown."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 0
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.Bilinear)):
        return 1
    # Hugging Face's Conv1D (GPT-2 and relatives) stores its weight as (in, out).
    if type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers"):
        return 0
    return None


def _owners_all(model: nn.Module) -> dict[int, list[tuple[str, nn.Module]]]:
    """id(parameter) -> every (full name, owning module), in registration order."""
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, param in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            entries = owners.setdefault(id(param), [])
            if all(full != n for n, _ in entries):
                entries.append((full, module))
    return owners


def _primary(entries: Sequence[tuple[str, nn.Module]]) -> nn.Module:
    """The module a parameter belongs to: the embedding, for a weight tied to a readout."""
    return next((m for _, m in entries if isinstance(m, _EMBEDDINGS)), entries[0][1])


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    """Parameter name -> the module that holds it (the embedding, for a tied weight)."""
    all_owners = _owners_all(model)
    return {
        name: _primary(all_owners.get(id(param), [(name, model)])) for name, param in model.named_parameters()
    }


def _classify_shape(
    name: str, shape: tuple[int, ...], ref: tuple[int, ...], module: nn.Module | None
) -> tuple[ParamClass, str, bool]:
    """(class, reason, fan_in_grows) from which dims differ between the model and reference."""
    if len(shape) != len(ref):
        raise ClassificationError(f"rank differs ({tuple(ref)} vs {tuple(shape)})")
    grows = [a != b for a, b in zip(shape, ref)]
    if len(shape) < 2 or isinstance(module, _VECTOR_MODULES):
        kind = type(module).__name__ if module is not None else "vector"
        return ParamClass.VECTOR, f"{kind} / rank {len(shape)}", False
    fan_in_dim = _fan_in_dim(module)
    if fan_in_dim is None and len(shape) >= 3 and shape[0] == 1 and sum(grows) == 1:
        # (1, ..., n, d): broadcast over the batch, so added to activations (ViT's cls token and
        # position embeddings): an embedding-like table.
        return ParamClass.VECTOR, "broadcast table (leading size-1 dim), added to activations", False
    if any(grows[2:]):
        if isinstance(module, nn.modules.conv._ConvNd):
            raise ClassificationError(
                f"a kernel dimension changes with width ({tuple(ref)} vs {tuple(shape)})"
            )
        raise ClassificationError(
            f"a {type(module).__name__} parameter of rank {len(shape)} grows in dims "
            f"{[i for i, g in enumerate(grows) if g]} ({tuple(ref)} vs {tuple(shape)})"
        )
    fan_out_dim = None if fan_in_dim is None else 1 - fan_in_dim
    if grows[0] and grows[1]:
        return ParamClass.HIDDEN, "fan-in and fan-out grow", True
    if not (grows[0] or grows[1]):
        return ParamClass.VECTOR, "no dimension grows", False
    if fan_in_dim is None or fan_out_dim is None:
        raise ClassificationError(
            f"one dimension of {tuple(shape)} grows but a {type(module).__name__} does not say which "
            "is fan-in (a readout stored as (in, out) is used as x @ W); add an override: "
            "'output' if the growing dim is read from, 'vector' if it is written to"
        )
    if grows[fan_in_dim]:
        return ParamClass.OUTPUT, "fan-in grows, fan-out fixed (readout or bottleneck)", True
    return ParamClass.VECTOR, "fan-out grows, fan-in fixed (input layer)", False


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


def _override_hint(name: str, cls: str = "hidden") -> str:
    return f"overrides={{{re.escape(name)!r}: {cls!r}}}"


def classify(
    model: nn.Module,
    reference: nn.Module | None = None,
    *,
    overrides: Mapping[str, ParamClass | str] | None = None,
    width_ratio: float | None = None,
) -> ParamTable:
    """Tell each parameter's class from which of its dimensions grow with width.

    Args:
        model: the model to train (any ``nn.Module``).
        reference: the same architecture at another width (build it on the meta device with
            :func:`meta_model` to spend no memory). Like mup's base shapes: dims that differ
            grow with width. :func:`parametrize` also takes the factory itself.
        overrides: ``{regex: class}``, searched in parameter names, first match wins; takes
            precedence over shapes. Enough on its own when every parameter is covered.
        width_ratio: model width / reference width, when known (else the ratio most dims
            share); a dim that grows unlike it is refused.

    A weight shared by an embedding and a readout (tied, as in GPT-2) is one parameter with two
    roles: it is classified vector-like (lr and init as the embedding) and its readout modules
    are listed in ``ParamInfo.readouts``, so :func:`apply_multipliers` scales their output by
    ``plan.tied_output_multiplier`` (``output_mult / m`` under muP, as mup's
    ``MuSharedReadout`` does). Registration order does not matter.

    Raises:
        ClassificationError: a parameter neither the reference nor an override explains, a
            dimension that grows unlike the width (e.g. as width²), or a reference with
            different parameter names or the same shapes.

    Example:
        >>> table = classify(MyModel(1024), reference=meta_model(MyModel, 256))  # doctest: +SKIP
    """
    rules = _compile_overrides(overrides)
    all_owners = _owners_all(model)
    named = list(model.named_parameters())
    ref_shapes: dict[str, tuple[int, ...]] | None = None
    if reference is not None:
        ref_shapes = {n: tuple(p.shape) for n, p in reference.named_parameters()}
        names = [n for n, _ in named]
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
        if named and all(ref_shapes[n] == tuple(p.shape) for n, p in named):
            raise ClassificationError(
                "reference model has the same shapes as the model, so no dimension is seen to "
                "grow; pass the factory itself (parametrize(model, plan, reference=make_model)) "
                "or build the reference at a different width"
            )
    if width_ratio is None:
        width_ratio = _common_ratio(named, ref_shapes)
    infos: dict[str, ParamInfo] = {}
    unexplained: list[str] = []
    for name, param in named:
        entries = all_owners.get(id(param), [(name, model)])
        module = _primary(entries)
        tied = isinstance(module, _EMBEDDINGS) and len(entries) > 1
        readouts = tuple(n.rsplit(".", 1)[0] for n, m in entries if tied and not isinstance(m, _EMBEDDINGS))
        shape = tuple(param.shape)
        ref = ref_shapes[name] if ref_shapes is not None else None
        forced = next((cls for pat, cls in rules if pat.search(name)), None)
        fan_in_grows = False
        if forced is not None:
            cls, reason = forced, "override"
            if ref is not None:
                fan_in_dim = _fan_in_dim(module)
                fan_in_grows = (
                    fan_in_dim is not None
                    and len(shape) > fan_in_dim
                    and shape[fan_in_dim] != ref[fan_in_dim]
                )
        elif readouts:
            cls, reason = (
                ParamClass.VECTOR,
                f"tied embedding/readout (readout {', '.join(readouts)} scaled by output_mult/m)",
            )
        elif ref is not None:
            try:
                cls, reason, fan_in_grows = _classify_shape(name, shape, ref, module)
            except ClassificationError as exc:
                raise ClassificationError(
                    f"cannot classify {name!r}: {exc}; e.g. {_override_hint(name, 'output')}"
                ) from None
            _check_growth(name, shape, ref, width_ratio)
            if param.ndim == 1 and name.endswith("bias"):  # does its layer's fan-in grow?
                fan_in_grows = _bias_fan_in_grows(name, module, ref_shapes)
        elif param.ndim < 2 or isinstance(module, _VECTOR_MODULES):
            cls, reason = ParamClass.VECTOR, "rank < 2 or embedding/norm"
        else:
            unexplained.append(name)
            continue
        infos[name] = ParamInfo(name, cls, shape, ref, type(module).__name__, reason, fan_in_grows, readouts)
    if unexplained:
        shown = ", ".join(unexplained[:4]) + (" …" if len(unexplained) > 4 else "")
        raise ClassificationError(
            f"cannot classify {len(unexplained)} matrix parameter(s) ({shown}): pass "
            "reference=<the same model at another width> or overrides={regex: class}"
        )
    return ParamTable(infos)


def _growth_ratios(
    named: Iterable[tuple[str, nn.Parameter]], ref_shapes: Mapping[str, tuple[int, ...]]
) -> Counter[float]:
    """How often each growth ratio (model dim / reference dim) occurs among the dims that grow."""
    return Counter(
        round(a / b, 6) for n, p in named for a, b in zip(p.shape, ref_shapes.get(n, ())) if a != b and b
    )


def _common_ratio(
    named: Sequence[tuple[str, nn.Parameter]], ref_shapes: Mapping[str, tuple[int, ...]] | None
) -> float | None:
    """The growth ratio most dims share between the model and the reference (the width ratio)."""
    if ref_shapes is None:
        return None
    ratios = _growth_ratios(named, ref_shapes)
    return ratios.most_common(1)[0][0] if ratios else None


def _check_growth(name: str, shape: tuple[int, ...], ref: tuple[int, ...], ratio: float | None) -> None:
    """A dim must grow like the width (rounding allowed: SwiGLU's 8/3·d, multiples of 256)."""
    if ratio is None or ratio == 1:
        return
    for dim, (a, b) in enumerate(zip(shape, ref)):
        if a == b or not b:
            continue
        power = math.log(a / b) / math.log(ratio)
        if not 0.75 <= power <= 1.25:
            raise ClassificationError(
                f"cannot classify {name!r}: dim {dim} grows {a / b:g}× while the width grows "
                f"{ratio:g}× (∝ width^{power:.3g}); muP has no rule for it here: add "
                f"{_override_hint(name)} (or 'vector'/'output') to choose its rule"
            )


def _bias_fan_in_grows(
    bias_name: str, module: nn.Module | None, ref_shapes: Mapping[str, tuple[int, ...]] | None
) -> bool:
    weight = getattr(module, "weight", None)
    fan_in_dim = _fan_in_dim(module)
    if not isinstance(weight, torch.Tensor) or fan_in_dim is None or ref_shapes is None:
        return False
    ref = ref_shapes.get(bias_name.rsplit(".", 1)[0] + ".weight")
    return ref is not None and weight.shape[fan_in_dim] != ref[fan_in_dim]


def meta_model(factory: Callable[[int], nn.Module], width: int) -> nn.Module:
    """``factory(width)`` built on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return factory(width)


# Prefixes wrappers add to parameter names: DDP / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _info(table: ParamTable, name: str) -> ParamInfo:
    """The table entry for ``name``, seen through DDP's and torch.compile's name prefixes."""
    key = name
    while key not in table and key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    if key not in table:
        raise ClassificationError(f"parameter {name!r} is not in the table; classify this model again")
    return table[key]


def _named_trainable(model: nn.Module, table: ParamTable) -> Iterator[tuple[str, nn.Parameter, ParamInfo]]:
    for name, param in model.named_parameters():
        yield name, param, _info(table, name)


# -- optimizer groups ------------------------------------------------------------------------

#: Names that say "attention" or "MLP", read by :func:`hidden_kind` for the optimizer groups and
#: by the per-component weight-decay calibration (:func:`hptransfer.diagnostics.component`), so a
#: calibrated exponent lands on the matrices it was measured on. The innermost module named like
#: an attention or MLP block decides (GPT-2's ``attn.c_proj`` is attention, ``mlp.c_proj`` MLP;
#: T5's ``DenseReluDense.wo`` MLP, Meta LLaMA's ``attention.wo`` attention); without one, an
#: unambiguous leaf module name (``q_proj``, ``c_attn``, ``qkv``…; ``fc1``, ``c_fc``,
#: ``up_proj``, ``w1``…).
_ATTENTION_MODULES = frozenset(
    {
        "attn",
        "attention",
        "self_attn",
        "self_attention",
        "selfattention",
        "cross_attn",
        "crossattention",
        "encdecattention",
        "mha",
    }
)
_MLP_MODULES = frozenset(
    {
        "mlp",
        "ffn",
        "ff",
        "feed_forward",
        "feedforward",
        "densereludense",
        "intermediate",
        "experts",
        "block_sparse_moe",
        "moe",
    }
)
_ATTENTION_LEAVES = frozenset(
    {
        "q",
        "k",
        "v",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "qkv",
        "c_attn",
        "query",
        "key",
        "value",
        "query_key_value",
        "wq",
        "wk",
        "wv",
        "wqkv",
    }
)
_MLP_LEAVES = frozenset(
    {
        "fc1",
        "fc2",
        "c_fc",
        "up_proj",
        "gate_proj",
        "down_proj",
        "w1",
        "w2",
        "w3",
        "gate",
        "up",
        "down",
        "dense_h_to_4h",
        "dense_4h_to_h",
        "wi",
        "wi_0",
        "wi_1",
    }
)


def hidden_kind(name: str) -> Literal["attention", "mlp"] | None:
    """Whether a hidden matrix belongs to attention or to the MLP, told from its name; None when
    the name does not say (then it takes the hidden class's numbers).

    >>> hidden_kind("model.layers.0.self_attn.q_proj.weight"), hidden_kind("h.0.mlp.c_proj.weight")
    ('attention', 'mlp')
    >>> hidden_kind("blocks.0.proj.weight") is None
    True
    """
    parts = [p.lower() for p in name.split(".")]
    modules = parts[:-1] if len(parts) > 1 else parts  # the parameter's own name (weight) aside
    for part in reversed(modules):  # the innermost module that says what it is decides
        if part in _ATTENTION_MODULES:
            return "attention"
        if part in _MLP_MODULES:
            return "mlp"
    if modules[-1] in _ATTENTION_LEAVES:
        return "attention"
    if modules[-1] in _MLP_LEAVES:
        return "mlp"
    return None


def hidden_kinds(table: ParamTable) -> dict[str, str]:
    """Hidden matrix name -> ``"attention"``, ``"mlp"`` or ``"hidden"`` (the name does not say):
    which weight decay :func:`param_groups` gives it when the plan's attention and MLP weight
    decays differ (``ProxyConfig.wd_exponents``)."""
    return {n: hidden_kind(n) or "hidden" for n in table.by_class(ParamClass.HIDDEN)}


#: torch's Adam/AdamW epsilon: a plan's eps equal to it needs no group key (kwargs can set it).
_TORCH_ADAM_EPS = 1e-8


def _muon_orientation(module: nn.Module | None, shape: tuple[int, ...], adjust: str | None) -> float:
    """lr factor that undoes torch Muon's shape adjustment read the wrong way round.

    ``adjust_lr_fn="original"`` multiplies the lr by ``sqrt(max(1, A/B))`` with ``(A, B)`` the
    weight's shape, read as (fan-out, fan-in) as in ``nn.Linear``. Hugging Face's ``Conv1D``
    (GPT-2) stores (fan-in, fan-out): its group's lr carries the ratio of the right factor to
    torch's. (``match_rms_adamw``'s factor is symmetric.)"""
    if adjust not in (None, "original") or _fan_in_dim(module) != 0 or len(shape) != 2:
        return 1.0
    fan_in, fan_out = shape
    return math.sqrt(max(1.0, fan_out / fan_in)) / math.sqrt(max(1.0, fan_in / fan_out))


def param_groups(
    model: nn.Module,
    plan: Plan,
    table: ParamTable,
    groups: Iterable[Mapping[str, Any]] | None = None,
    *,
    include_frozen: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer param groups for ``plan``: one group per distinct (lr, weight decay, eps,
    optimizer).

    Each group's lr is ``plan.base_lr * group['lr_scale']``, so multiplicative schedulers
    (``LambdaLR``, warmup-cosine) keep the rule; see :func:`scaled_lrs` for schedulers that
    take absolute lrs. Groups also carry ``hp_classes`` (which classes they hold) and
    ``hp_kinds`` (``"hidden.attention"``, ``"hidden.mlp"``, ``"vector.block"`` where a group holds
    such parameters).

    ``groups``: your own param groups (``[{"params": [...], "betas": ..., "lr": ...}, ...]``),
    as mup's ``MuAdam`` takes them. Each is split by class and keeps its other keys; its
    ``lr`` (default ``plan.base_lr``) and ``weight_decay`` (default the config's) are read as
    base values and carried by the rule. The numbers are for ``plan.optimizer`` (AdamW,
    coupled-L2 Adam, SGD or Muon; see :func:`build_optimizer`). A vector-like parameter none of
    whose dims grows (an output bias) keeps the base lr under every optimizer, as in mup.

    Attention vs MLP: hidden matrices are told apart by name (:func:`hidden_kind`; see them all
    with :func:`hidden_kinds`) and take ``plan.group_for("hidden", kind)``, which differs from the
    hidden class's only when the config gives them their own wd exponents
    (``wd_exponents = {attention = ..., mlp = ...}``); a matrix whose name says neither takes the
    hidden class's numbers.

    Muon (``plan.optimizer == "muon"``): every group carries ``use_muon``. Hidden 2-D matrices go
    to ``torch.optim.Muon`` (``use_muon=True``; no Adam ``eps`` key: Muon's ``eps`` is its
    Newton–Schulz clamp); a Hugging Face ``Conv1D`` weight, stored (in, out), gets an lr factor
    that corrects torch's ``adjust_lr_fn="original"`` shape factor, which reads it as (out, in).
    Hidden parameters that are not 2-D (conv kernels: torch's Muon refuses them) stay with AdamW
    at AdamW's width exponents for lr and wd (``hidden_lr_mult`` still applies), with a warning.
    Everything else is AdamW's, as under the ``adamw`` rule.

    Depth (a plan with a depth rule, a table from :func:`parametrize`): hidden matrices take the
    plan's depth factors with their class, norm gains and biases inside residual blocks take
    ``plan.group_for("vector", "block")``. Adam's epsilon: each Adam-type group carries its
    class's ``eps`` when the config scales it (``scale_eps``) or sets one other than torch's
    1e-8 (the plan's, over a user group's).
    """
    if groups is None:
        groups = [{"params": [p for _, p in model.named_parameters()]}]
    name_of = {id(p): n for n, p in model.named_parameters()}
    owners = _owners(model)
    muon = plan.optimizer == "muon"
    adamw_hidden = plan.rule.with_optimizer("adamw").exponents[ParamClass.HIDDEN] if muon else None
    not_matrices: list[str] = []
    merged: dict[tuple[int, float, float, float | None, bool], dict[str, Any]] = {}
    m = plan.width_mult
    for index, user_group in enumerate(groups):
        if "params" not in user_group:
            raise ValueError(f"param group {index} has no 'params'")
        params = user_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        extra = {k: v for k, v in user_group.items() if k not in ("params", "lr", "weight_decay")}
        base_lr = float(user_group.get("lr", plan.base_lr))
        for param in params:
            name = name_of.get(id(param))
            if name is None:
                raise ClassificationError(f"a parameter in group {index} is not in this model")
            info = _info(table, name)
            if not (param.requires_grad or include_frozen):
                continue
            cls = info.param_class
            kind: str | None = None
            if cls is ParamClass.HIDDEN:
                kind = hidden_kind(info.name)
            elif cls is ParamClass.VECTOR and info.in_block:
                kind = "block"  # a block's norm gain / bias
            hyper = plan.group_for(cls, kind)
            ex = plan.rule.exponents[cls]
            lr_scale, wd = hyper.lr_scale, hyper.weight_decay
            if cls is ParamClass.VECTOR and info.grows is False:
                lr_scale /= m**ex.lr  # no dim grows (an output bias): width-independent (as mup)
            if "weight_decay" in user_group:
                # the user's base wd, carried as the plan carries the config's for this kind
                wd = float(user_group["weight_decay"]) * hyper.wd_scale
            use_muon = muon and cls is ParamClass.HIDDEN and param.ndim == 2
            if use_muon:
                lr_scale *= _muon_orientation(owners.get(name), tuple(param.shape), plan.muon_adjust_lr_fn)
            hyper_eps = hyper.eps
            if muon and not use_muon and cls is ParamClass.HIDDEN and adamw_hidden is not None:
                lr_scale *= m ** (adamw_hidden.lr - ex.lr)  # AdamW's width rule for this one
                wd *= m ** (adamw_hidden.wd - ex.wd)
                if plan.scale_eps:
                    hyper_eps *= m ** (adamw_hidden.eps - ex.eps)
                not_matrices.append(name)
            lr = base_lr * lr_scale
            adam_like = plan.optimizer in ("adamw", "adam") or (muon and not use_muon)
            eps = hyper_eps if adam_like and (plan.scale_eps or hyper_eps != _TORCH_ADAM_EPS) else None
            key = (index, lr, wd, eps, use_muon)
            group = merged.setdefault(
                key,
                {
                    **{k: v for k, v in extra.items() if not (use_muon and k == "eps")},
                    "params": [],
                    "lr": lr,
                    "weight_decay": wd,
                    "lr_scale": lr_scale * base_lr / plan.base_lr,
                    "hp_classes": [],
                    "hp_kinds": [],
                    **({} if eps is None else {"eps": eps}),
                    **({"use_muon": use_muon} if muon else {}),
                },
            )
            group["params"].append(param)
            if str(cls) not in group["hp_classes"]:
                group["hp_classes"].append(str(cls))
            label = f"{cls}.{kind}" if kind else None
            if label and label not in group["hp_kinds"]:
                group["hp_kinds"].append(label)
    if not_matrices:
        shown = ", ".join(not_matrices[:3]) + (" …" if len(not_matrices) > 3 else "")
        warnings.warn(
            f"{len(not_matrices)} hidden parameter(s) are not 2-D ({shown}): torch.optim.Muon takes "
            "matrices only, so AdamW trains them with AdamW's width rule",
            stacklevel=2,
        )
    return list(merged.values())


_OPTIMIZER_CLASSES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


def build_optimizer(
    model: nn.Module,
    plan: Plan,
    table: ParamTable,
    groups: Iterable[Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """The torch optimizer the plan's rule is for, over :func:`param_groups`.

    ``adamw``: ``torch.optim.AdamW``; ``adam``: ``torch.optim.Adam`` with coupled L2; ``sgd``:
    ``torch.optim.SGD``; ``muon``: a :class:`~hptransfer.scaling.torch_optim.MuonAdamW`, one
    optimizer over ``torch.optim.Muon`` (hidden matrices, ``adjust_lr_fn`` from the plan) and
    ``torch.optim.AdamW`` (the rest) that schedulers, ``state_dict`` and checkpoints treat as
    one. kwargs go to the optimizer (betas, momentum…; for Muon: AdamW's ``betas``/``eps`` and
    Muon's ``momentum``, ``nesterov``, ``ns_steps``, ``muon_eps``).

    Example:
        >>> opt = build_optimizer(model, plan, table)                     # doctest: +SKIP
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)  # doctest: +SKIP
    """
    param_list = param_groups(model, plan, table, groups)
    if plan.optimizer == "muon":
        from hptransfer.scaling.torch_optim import MuonAdamW

        adjust = kwargs.setdefault("adjust_lr_fn", plan.muon_adjust_lr_fn)
        if (adjust or "original") != plan.muon_adjust_lr_fn:
            raise ValueError(
                f"adjust_lr_fn={adjust!r} but the plan's hidden lr is for {plan.muon_adjust_lr_fn!r} "
                "(the two scale with width differently): set muon_adjust_lr_fn in the config instead"
            )
        return MuonAdamW(param_list, lr=plan.base_lr, **kwargs)
    cls = _OPTIMIZER_CLASSES[plan.optimizer]
    return cls(param_list, lr=plan.base_lr, **kwargs)


def adamw(model: nn.Module, plan: Plan, table: ParamTable, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`param_groups`; kwargs go to AdamW (betas, eps, fused…)."""
    if plan.optimizer != "adamw":
        raise ValueError(f"the plan is for {plan.optimizer!r}; use build_optimizer(...)")
    return torch.optim.AdamW(param_groups(model, plan, table), lr=plan.base_lr, **kwargs)


def scaled_lrs(optimizer: torch.optim.Optimizer, lr: float) -> list[float]:
    """Per-group lrs for a scheduler that takes absolute values (``OneCycleLR(max_lr=...)``,
    ``CyclicLR``): ``lr`` takes the place of ``plan.base_lr`` (the config's ``lr``), each group
    gets its share (``lr * group['lr_scale']``; Muon's groups included).
    """
    return [lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups]


# -- init ------------------------------------------------------------------------------------


def _torch_default_bound(module: nn.Module | None) -> float | None:
    """The bound of torch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` init of a Linear or
    Conv layer's weight and bias (fan-in as torch computes it), or None for other modules."""
    weight = getattr(module, "weight", None)
    if not isinstance(module, _BIASED_LAYERS) or not isinstance(weight, torch.Tensor) or weight.ndim < 2:
        return None
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    return 1.0 / math.sqrt(fan_in) if fan_in else None


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt()) if t.numel() else 0.0


def _fan_in_scaled(
    param: torch.Tensor, module: nn.Module | None, ref_param: torch.Tensor | None, fan_in_ratio: float
) -> bool:
    """Does this parameter's own init shrink as 1/sqrt(fan_in) (torch's default), or keep a
    fixed std (GPT-2's 0.02)? Told from torch's uniform bound, else from a real reference at
    another width, else assumed fixed."""
    bound = _torch_default_bound(module)
    values = param.detach().float()
    if bound is not None and values.numel():
        peak, rms = float(values.abs().max()), _rms(values)
        if peak <= bound * (1 + 1e-5) and rms >= 0.4 * bound:
            return True
    if ref_param is not None and not ref_param.is_meta and fan_in_ratio != 1:
        r, r_ref = _rms(values), _rms(ref_param)
        if r > 0 and r_ref > 0:
            observed = math.log(r / r_ref)
            return abs(observed + 0.5 * math.log(fan_in_ratio)) < abs(observed)
    return False


@torch.no_grad()
def apply_init(
    model: nn.Module,
    plan: Plan,
    table: ParamTable,
    *,
    reference: nn.Module | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Initialise ``model`` for ``plan``, keeping the model's own init by default.

    Per class, with ``m = plan.width_mult``:

    * explicit std (``plan[c].init_std`` set, from the config's ``init_std``,
      ``embed_init_std`` or ``output_init_std``): matrices are redrawn as N(0, std²) (std 0:
      zeros), and Linear/Conv biases start at zero (the original behaviour of our proxies);
    * otherwise the model's own init is kept and multiplied by
      ``init_scale * m**init_exponent`` relative to what it was at the base width: a
      fan-in-scaled init (torch's default, told from its uniform bound) already shrinks as
      ``m**-0.5`` on growing fan-ins, so hidden matrices keep it and the readout takes the extra
      ``m**-0.5`` (``m**-1`` in all); a fixed-std init (normal(0, 0.02) at every width) takes the
      full factor. Vector-like parameters keep their scale (biases of torch's default init are
      brought back to their base-width scale, as mup's ``rescale_params`` does).

    At the base width with default scales nothing changes. Call it once, on a freshly built
    model (it corrects the init the model was built with). ``reference``: a real (not meta)
    model at another width, which tells a fixed from a fan-in-scaled normal init exactly.
    """
    owners = _owners(model)
    m = plan.width_mult
    ref_params = dict(reference.named_parameters()) if reference is not None else {}
    for name, param, info in _named_trainable(model, table):
        if param.is_meta:
            continue
        hyper = plan[info.param_class]
        module = owners.get(name)
        is_bias = param.ndim < 2
        if is_bias:
            if not name.endswith("bias") or not isinstance(module, _BIASED_LAYERS):
                continue  # norm gains and other vectors keep their init
            if plan.zero_biases:
                param.zero_()
                continue
        if not is_bias and hyper.init_std is not None:
            std = hyper.init_std * hyper.init_scale
            if std == 0:
                param.zero_()
            else:
                param.normal_(0.0, std, generator=generator)
            continue
        scale = 1.0 if is_bias else hyper.init_scale
        exponent = 0.0 if is_bias else hyper.init_exponent
        factor = scale * m**exponent
        if m != 1 and info.fan_in_grows:
            ref = ref_params.get(name)
            if _fan_in_scaled(param, module, ref, m):
                factor *= math.sqrt(m)  # undo the fan-in shrink: relative to the base width
        if factor != 1.0:
            param.mul_(factor)


# -- forward multipliers ---------------------------------------------------------------------

_HOOKS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def apply_multipliers(model: nn.Module, plan: Plan, table: ParamTable) -> list[nn.Module]:
    """Multiply the input of each readout module by its multiplier (a forward pre-hook, like
    mup's ``MuReadout``; the bias is not scaled): ``plan['output'].multiplier`` for a readout
    of its own, ``plan.tied_output_multiplier`` for one tied to the embedding. Re-applying
    replaces the hook, so the multiplier never compounds. Returns the modules hooked."""
    modules = dict(model.named_modules())
    owners = _owners(model)
    targets: list[tuple[nn.Module, float]] = []
    for name in table.by_class(ParamClass.OUTPUT):
        targets.append((owners[name], plan[ParamClass.OUTPUT].multiplier))
    for name in table.tied():
        targets.extend((modules[r], plan.tied_output_multiplier) for r in table[name].readouts)
    hooked: list[nn.Module] = []
    for module, mult in targets:
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


# -- attention -------------------------------------------------------------------------------


class AttentionProbe(TorchFunctionMode):
    """Watches (or rewrites) the logit scale of every ``scaled_dot_product_attention`` call,
    and counts softmaxes over square trailing dims (attention written by hand, whose scale
    cannot be seen). Class and module names play no part."""

    def __init__(self, rewrite: float | None = None) -> None:
        super().__init__()
        self.rewrite = rewrite
        self.scales: list[float] = []
        self.manual = 0
        self.fixed = 0  # calls whose scale cannot be changed (nn.MultiheadAttention)

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            query = args[0] if args else kwargs["query"]
            scale = kwargs.get("scale")  # keyword-only in torch
            self.scales.append(float(scale) if scale is not None else query.shape[-1] ** -0.5)
            if self.rewrite is not None:
                kwargs["scale"] = self.rewrite
        elif func is F.multi_head_attention_forward:
            # nn.MultiheadAttention: always 1/sqrt(d_head), not reachable from outside.
            embed_dim = args[3] if len(args) > 3 else kwargs["embed_dim_to_check"]
            heads = args[4] if len(args) > 4 else kwargs["num_heads"]
            self.scales.append((embed_dim // heads) ** -0.5)
            self.fixed += 1
        elif func in (torch.softmax, F.softmax, torch.Tensor.softmax) and not self.scales:
            t = args[0] if args else None
            if isinstance(t, torch.Tensor) and t.ndim >= 3 and t.shape[-1] == t.shape[-2]:
                self.manual += 1
        return func(*args, **kwargs)


def _attention_message(probe: AttentionProbe, plan: Plan) -> str | None:
    want = plan.attention_scale
    if probe.scales:
        seen = sorted(set(round(s, 9) for s in probe.scales))
        if want is None:
            return (
                f"model calls scaled_dot_product_attention (logit scale {seen[0]:g}) but the config "
                "has no head_dim or n_heads: set one so the plan carries the attention scale"
            )
        if all(math.isclose(s, want, rel_tol=1e-4) for s in seen):
            return None
        shown = ", ".join(f"{s:g}" for s in seen[:3])
        if probe.fixed:
            return (
                f"nn.MultiheadAttention scales logits by {shown} (1/sqrt(d_head), fixed) but the plan "
                f"wants {want:g} at width {plan.width}: scale the query projection by their ratio, "
                "or use scaled_dot_product_attention(..., scale=plan.attention_scale)"
            )
        return (
            f"attention logits are scaled by {shown} but the plan wants {want:g} at width "
            f"{plan.width} (attn_mult/sqrt(d_head) at the base width, ∝ 1/d_head under muP): pass "
            "scale=plan.attention_scale to scaled_dot_product_attention, or parametrize(..., "
            "attention='apply') to rewrite it, or attention='ignore' if you handle it"
        )
    if probe.manual and want is not None:
        return (
            "model computes attention by hand (softmax over a square score matrix), so its scale "
            f"cannot be checked: scale the logits by plan.attention_scale ({want:g} at width "
            f"{plan.width}), then pass attention='ignore'"
        )
    return None


def check_attention(model: nn.Module, plan: Plan, *example_args: Any, **example_kwargs: Any) -> str | None:
    """Run one forward pass (no grad) and return a warning text if the attention logits are not
    scaled as ``plan`` says, else None."""
    probe = AttentionProbe()
    with torch.no_grad(), probe:
        model(*example_args, **example_kwargs)
    return _attention_message(probe, plan)


_ATTENTION_HOOKS: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()


def _install_attention_hooks(model: nn.Module, plan: Plan, mode: str) -> None:
    for handle in _ATTENTION_HOOKS.pop(model, []):
        handle.remove()
    if mode == "ignore" or (mode == "apply" and plan.attention_scale is None):
        return
    state: dict[str, Any] = {}

    # Kept out of torch.compile's graph (its tracing would skip or bake in the mode): the
    # hooks run eagerly around the compiled forward, so check and apply work compiled too.
    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def enter(_mod: nn.Module, _args: Any) -> None:
        probe = AttentionProbe(rewrite=plan.attention_scale if mode == "apply" else None)
        probe.__enter__()  # type: ignore[no-untyped-call]
        state["probe"] = probe

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def leave(_mod: nn.Module, _args: Any, _out: Any) -> None:
        probe = state.pop("probe", None)
        if probe is None:
            return
        probe.__exit__(None, None, None)
        if mode == "check":
            for handle in _ATTENTION_HOOKS.pop(model, []):
                handle.remove()
            message = _attention_message(probe, plan)
            if message:
                warnings.warn(message, stacklevel=2)
        elif not state.get("checked"):  # apply: say once if there was nothing to rewrite
            state["checked"] = True
            if probe.manual and not probe.scales:
                warnings.warn(_attention_message(probe, plan) or "", stacklevel=2)

    _ATTENTION_HOOKS[model] = [
        model.register_forward_pre_hook(enter),
        model.register_forward_hook(leave, always_call=True),
    ]


# -- residual branches (depth) ---------------------------------------------------------------

#: Last projection of a residual branch, by module name inside a block: attention output
#: (Llama/Mistral ``o_proj``, CLIP/BART/``nn.MultiheadAttention`` ``out_proj``, GPT-2/nanoGPT
#: ``c_proj``, timm/litgpt ``proj``), MLP output (``down_proj``, ``fc2``, ``w2``, ``wo``,
#: GPT-NeoX/Falcon ``dense_4h_to_h``), BERT/old-ViT ``output.dense`` and GPT-NeoX/Phi
#: ``attention.dense``. Scaling that projection's output scales the whole branch (what comes
#: after it, dropout, is linear). Anything else: ``parametrize(..., residual_branches=[regex])``.
_BRANCH_OUTPUT = re.compile(
    r"(?:^|\.)(?:o_proj|out_proj|c_proj|down_proj|fc2|proj|w2|wo|dense_4h_to_h"
    r"|output\.dense|(?:attn|attention|self_attention)\.dense)$"
)
#: torch's own layers run a fused kernel in eval mode without grad that skips submodule hooks.
_FUSED_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)

_RESIDUAL_HOOKS: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ResidualBranches:
    """Where a model's residual branches end: the repeated blocks and, inside them, the modules
    whose output is multiplied by ``plan.residual_multiplier``.

    ``container``: name of the ``ModuleList``/``Sequential`` holding the blocks ("" when the
    blocks could not be told from explicit patterns); ``blocks``: how many; ``outputs``: the
    full names of the branch-output modules (empty when the blocks scale their branches
    themselves: ``self_scaled``)."""

    container: str
    blocks: int
    outputs: tuple[str, ...]
    self_scaled: bool = False


class _ResidualScale:
    """Forward hook ``output * multiplier`` (a class, not a closure: the model still pickles,
    and Dynamo traces it into the compiled graph like the readout multiplier)."""

    def __init__(self, multiplier: float) -> None:
        self.multiplier = multiplier

    def __call__(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output * self.multiplier
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (output[0] * self.multiplier, *output[1:])  # nn.MultiheadAttention: (out, weights)
        raise TypeError(
            f"residual branch output is a {type(output).__name__}, not a tensor: name the "
            "projection that writes the branch output in residual_branches"
        )

    def __repr__(self) -> str:
        return f"_ResidualScale({self.multiplier:g})"


def _same_structure(children: Sequence[nn.Module]) -> bool:
    def shape(module: nn.Module) -> tuple[Any, ...]:
        mods = tuple((n, type(m)) for n, m in module.named_modules())
        params = tuple((n, tuple(p.shape)) for n, p in module.named_parameters())
        return type(module), mods, params

    first = shape(children[0])
    return all(shape(c) == first for c in children[1:])


def _repeated_containers(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """``ModuleList``/``Sequential`` modules whose children (≥ 1) are all built alike, with
    those children."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) >= 1:
            children = list(module.children())
            if len(children) == len(module) and _same_structure(children):
                found.append((name, children))
    return found


def _outermost(names: Iterable[str]) -> list[str]:
    chosen: list[str] = []
    for name in sorted(set(names), key=lambda n: (n.count("."), n)):
        if not any(name.startswith(c + ".") for c in chosen):
            chosen.append(name)
    return chosen


def _fan_out(module: nn.Module) -> int | None:
    weight = getattr(module, "weight", None)
    fan_in_dim = _fan_in_dim(module)
    if not isinstance(weight, torch.Tensor) or weight.ndim < 2 or fan_in_dim not in (0, 1):
        return None
    return int(weight.shape[1 - fan_in_dim])


def _branch_hint(depth: int | None) -> str:
    return (
        "name the last projection of each residual branch (attention output and MLP output): "
        "parametrize(..., residual_branches=[r'layers\\.\\d+\\.self_attn\\.o_proj$', "
        r"r'layers\.\d+\.mlp\.down_proj$']), or build the blocks with "
        "x + plan.residual_multiplier * branch(x) and give each block a residual_multiplier "
        "attribute" + (f" (the plan is for {depth} blocks)" if depth is not None else "")
    )


def find_residual_branches(
    model: nn.Module, depth: int | None = None, patterns: Sequence[str] | None = None
) -> ResidualBranches:
    """Find the residual blocks of ``model`` and the module ending each residual branch.

    The blocks are the children of a ``ModuleList``/``Sequential`` whose children are built
    alike (same module types and parameter shapes); inside each, a branch ends at the
    outermost module named like an output projection (``o_proj``, ``c_proj``, ``down_proj``,
    ``fc2``, ``proj``, ``w2``, ``wo``, ``output.dense``, …), and all of those in one block must
    write the same number of features (the residual width). ``patterns`` (regexes searched in
    full module names, as ``overrides`` are) name the branch outputs instead. Blocks carrying a
    ``residual_multiplier`` attribute scale their branches themselves (the built-in models).

    ``depth``: the number of blocks the plan is for; with several candidate containers, the
    one with that many blocks is chosen.

    Raises:
        ClassificationError: no blocks or branches found (the message says what to pass), a
            pattern that matches nothing, branches of different widths in one block, or no
            container with ``depth`` blocks.
    """
    modules = dict(model.named_modules())
    containers = _repeated_containers(model)
    if patterns is not None:
        try:
            compiled = [re.compile(p) for p in patterns]
        except re.error as exc:
            raise ClassificationError(f"residual_branches: {exc}") from None
        for pattern in compiled:
            if not any(pattern.search(n) for n in modules if n):
                raise ClassificationError(
                    f"residual_branches pattern {pattern.pattern!r} matches no module of the model"
                )
        outputs = _outermost(n for n in modules if n and any(p.search(n) for p in compiled))
        holders = [
            (name, c)
            for name, c in containers
            if all(o.startswith(f"{name}." if name else "") and o != name for o in outputs)
            and all(
                any(o.startswith(f"{name}.{i}." if name else f"{i}.") for o in outputs) for i in range(len(c))
            )
        ]
        if holders:
            name, container = max(holders, key=lambda h: h[0].count("."))
            return ResidualBranches(name, len(container), tuple(outputs))
        return ResidualBranches("", 0, tuple(outputs))

    found: list[ResidualBranches] = []
    for name, blocks in containers:
        prefix = f"{name}." if name else ""
        if isinstance(blocks[0], _FUSED_LAYERS):
            raise ClassificationError(
                f"the blocks in {name or 'the model'} are torch's {type(blocks[0]).__name__}, whose fused "
                "eval-mode kernel skips forward hooks: write the block with x + "
                "plan.residual_multiplier * branch(x) and a residual_multiplier attribute"
            )
        if all(isinstance(getattr(b, "residual_multiplier", None), (int, float)) for b in blocks):
            found.append(ResidualBranches(name, len(blocks), (), self_scaled=True))
            continue
        outputs = []
        for index, block in enumerate(blocks):
            inner = _outermost(n for n, _ in block.named_modules() if n and _BRANCH_OUTPUT.search(n))
            if not inner:
                break
            widths = {_fan_out(block.get_submodule(n)) for n in inner}
            if len(widths) != 1 or None in widths:
                raise ClassificationError(
                    f"block {prefix}{index} has output-like modules {inner} that do not all write "
                    f"one residual width ({sorted(map(str, widths))}); {_branch_hint(depth)}"
                )
            outputs.extend(f"{prefix}{index}.{n}" for n in inner)
        else:
            found.append(ResidualBranches(name, len(blocks), tuple(outputs)))
    found = [
        f
        for f in found
        if not any(f.container.startswith(g.container + ".") for g in found if g is not f and g.container)
    ]
    if not found:
        raise ClassificationError(
            f"cannot find the residual blocks of {type(model).__name__}: {_branch_hint(depth)}"
        )
    if depth is not None and len(found) > 1:
        matching = [f for f in found if f.blocks == depth]
        found = matching or found
    if len(found) > 1:
        shown = ", ".join(f"{f.container or '<model>'} ({f.blocks})" for f in found)
        raise ClassificationError(f"several stacks of residual blocks ({shown}): {_branch_hint(depth)}")
    chosen = found[0]
    if not chosen.self_scaled and chosen.blocks and len(chosen.outputs) == chosen.blocks:
        first = chosen.outputs[0].removeprefix(f"{chosen.container}.0." if chosen.container else "0.")
        warnings.warn(
            f"found one residual branch per block ({first}); if the blocks have another (an MLP), "
            "name every branch output in residual_branches",
            stacklevel=3,
        )
    return chosen


def _check_plan_depth(branches: ResidualBranches, plan: Plan) -> None:
    if plan.depth is None:
        return
    if branches.blocks and branches.blocks != plan.depth:
        raise ClassificationError(
            f"the plan is for depth {plan.depth} (base {plan.base_depth}) but the model has "
            f"{branches.blocks} blocks in {branches.container or 'the model'}: build the model with "
            f"{plan.depth} blocks, or make the plan with suggest(..., depth={branches.blocks})"
        )
    if not branches.blocks and len(branches.outputs) % plan.depth:
        raise ClassificationError(
            f"residual_branches matched {len(branches.outputs)} modules, not a multiple of the "
            f"plan's depth {plan.depth}"
        )


def _warn_unplanned_depth(model: nn.Module, plan: Plan) -> None:
    """A plan made without a depth on a model whose block count is not the proxy's: say that the
    depth rule was not applied (a user who never asked for depth transfer is not stopped)."""
    if plan.base_depth is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            branches = find_residual_branches(model, plan.base_depth, None)
    except ClassificationError:
        return  # no blocks to count
    if branches.blocks and branches.blocks != plan.base_depth:
        warnings.warn(
            f"the model has {branches.blocks} residual blocks but the plan was made without a depth, "
            f"so it holds at the proxy's depth {plan.base_depth} and the {plan.depth_rule} depth rule "
            f"is not applied: make the plan with suggest(..., depth={branches.blocks})",
            stacklevel=3,
        )


def apply_residual_multipliers(
    model: nn.Module, plan: Plan, residual_branches: Sequence[str] | None = None
) -> ResidualBranches | None:
    """Multiply every residual branch of ``model`` by ``plan.residual_multiplier``
    (``(depth/base_depth)**-alpha``: CompleteP alpha = 1, depth-muP alpha = 1/2) with a forward
    hook on the branch's last projection; no class change, no new parameters or buffers, traced
    by ``torch.compile``. Re-applying replaces the hooks (never compounds).

    Without a depth rule, or a plan made without a depth (it holds at the proxy's depth), nothing
    is looked for and None is returned. Otherwise the blocks must
    be found (see :func:`find_residual_branches`) and number ``plan.depth``; at the base depth
    (multiplier 1) no hook is installed. Blocks with a ``residual_multiplier`` attribute (the
    built-in models) scale themselves: it must equal the plan's.
    """
    for handle in _RESIDUAL_HOOKS.pop(model, []):
        handle.remove()
    if plan.depth_rule == "none":
        return None
    if plan.depth is None:  # no depth given: the plan holds at the proxy's own depth
        _warn_unplanned_depth(model, plan)
        return None
    branches = find_residual_branches(model, plan.depth, residual_branches)
    _check_plan_depth(branches, plan)
    mult = plan.residual_multiplier
    if branches.self_scaled:
        container = model.get_submodule(branches.container)
        seen = {float(getattr(b, "residual_multiplier", 1.0)) for b in container.children()}
        if any(not math.isclose(s, mult, rel_tol=1e-6) for s in seen):
            raise ClassificationError(
                f"the blocks in {branches.container or 'the model'} scale their residual branches by "
                f"{', '.join(f'{s:g}' for s in sorted(seen))} but the plan wants {mult:g} (depth "
                f"{plan.depth}, base {plan.base_depth}, {plan.depth_rule}): build the model with "
                "residual_multiplier=plan.residual_multiplier"
            )
        return branches
    if mult != 1.0:
        hook = _ResidualScale(mult)
        _RESIDUAL_HOOKS[model] = [
            _hook_target(model, n).register_forward_hook(hook) for n in branches.outputs
        ]
    return branches


def _mark_blocks(table: ParamTable, branches: ResidualBranches) -> ParamTable:
    """The table with ``in_block`` set on the parameters inside the residual blocks."""
    if branches.container or branches.blocks:
        prefixes: tuple[str, ...] = (f"{branches.container}." if branches.container else "",)
    else:  # blocks known only from explicit patterns: up to the last index before each output
        prefixes = tuple({m.group(1) + "." for o in branches.outputs if (m := re.match(r"(.*\.\d+)\.", o))})
    if not prefixes:
        return table
    return ParamTable({n: replace(i, in_block=n.startswith(prefixes)) for n, i in table.items()})


def _hook_target(model: nn.Module, name: str) -> nn.Module:
    """The module to hook for a branch ending at ``name``: ``nn.MultiheadAttention`` uses its
    ``out_proj`` weight without calling it, so the attention module itself is hooked."""
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    if isinstance(parent, nn.MultiheadAttention) and name.endswith("out_proj"):
        return parent
    return model.get_submodule(name)


# -- all in one ------------------------------------------------------------------------------


def _reference_for(
    model: nn.Module, plan: Plan, reference: Reference | None
) -> tuple[nn.Module | None, float | None]:
    """(reference module, the width ratio model/reference it should show, when known)."""
    if reference is None or isinstance(reference, nn.Module):
        return reference, None
    if not callable(reference):
        raise TypeError(f"reference must be an nn.Module or a factory width -> nn.Module, got {reference!r}")
    if plan.width != plan.base_width:
        # A real base-width model: its shapes tell what grows, its values how the init scales.
        with torch.random.fork_rng(devices=[]):
            built = reference(plan.base_width)
        return built, plan.width_mult
    return meta_model(reference, 2 * plan.width), 0.5


def parametrize(
    model: nn.Module,
    plan: Plan,
    reference: Reference | None = None,
    *,
    overrides: Mapping[str, ParamClass | str] | None = None,
    residual_branches: Sequence[str] | None = None,
    init: bool = True,
    attention: Literal["check", "apply", "ignore"] = "check",
    attention_handled: bool = False,
    example_inputs: tuple[Any, ...] | None = None,
) -> ParamTable:
    """Classify, initialise and hook ``model`` for ``plan`` in one call; returns the table.

    Args:
        model: the model to train, built at ``plan.width``.
        plan: from :func:`~hptransfer.scaling.suggest`.
        reference: the factory ``width -> nn.Module`` (recommended: works at every width,
            the base width included), or the same model built at the base width (on the meta
            device with :func:`meta_model` to save memory; or at another width when ``model``
            is at the base width).
        overrides: ``{regex: class}`` for parameters the shapes cannot explain.
        residual_branches: regexes naming the last projection of each residual branch
            (``[r"self_attn\\.o_proj$", r"mlp\\.down_proj$"]``), when the plan has a depth rule
            and they are not found by name (see :func:`find_residual_branches`); their output
            is multiplied by ``plan.residual_multiplier`` (:func:`apply_residual_multipliers`).
        init: apply :func:`apply_init` (keeps the model's own init at the base width).
        attention: ``"check"`` watches the first forward pass and warns when the logit scale of
            ``scaled_dot_product_attention`` differs from ``plan.attention_scale`` (or attention
            is computed by hand); ``"apply"`` rewrites the scale of every such call to
            ``plan.attention_scale`` (a torch function mode around each forward; costs a little
            Python per op). Both work under ``torch.compile``. ``"ignore"`` trusts the model;
            ``attention_handled=True`` is the old spelling of ``"ignore"``.
        example_inputs: run the attention check now on these inputs instead of on the first
            forward.

    Raises:
        ClassificationError: a parameter that cannot be classified, a model whose width is
            not ``plan.width``, or (with a depth rule) residual blocks that cannot be found or
            whose number is not ``plan.depth``.
    """
    if attention not in ("check", "apply", "ignore"):
        raise ValueError(f"attention must be 'check', 'apply' or 'ignore', got {attention!r}")
    if attention_handled and attention == "check":
        attention = "ignore"
    ref_module, expected_ratio = _reference_for(model, plan, reference)
    if expected_ratio is None and ref_module is not None and plan.width_mult != 1:
        expected_ratio = plan.width_mult  # a module reference is at the base width
    _check_plan_width(model, plan, ref_module, expected_ratio)
    table = classify(model, ref_module, overrides=overrides, width_ratio=expected_ratio)
    if init:  # past the width check, a reference is at the base width whenever m != 1
        apply_init(model, plan, table, reference=ref_module)
    apply_multipliers(model, plan, table)
    branches = apply_residual_multipliers(model, plan, residual_branches)
    if branches is not None:
        table = _mark_blocks(table, branches)
    if attention == "check" and example_inputs is not None:
        message = check_attention(model, plan, *example_inputs)
        if message:
            warnings.warn(message, stacklevel=2)
    else:
        _install_attention_hooks(model, plan, attention if example_inputs is None else "ignore")
    return table


def _check_plan_width(
    model: nn.Module, plan: Plan, reference: nn.Module | None, expected: float | None
) -> None:
    """Every growing dim grew by one ratio, and not the plan's: the model (or the reference) is
    not at the width the plan is for."""
    if reference is None or expected is None:
        return
    ref_shapes = {n: tuple(p.shape) for n, p in reference.named_parameters()}
    ratios = set(_growth_ratios(model.named_parameters(), ref_shapes))
    if len(ratios) == 1 and not math.isclose(seen := ratios.pop(), expected, rel_tol=1e-4):
        m = plan.width_mult
        raise ClassificationError(
            f"the plan is for width {plan.width} (base {plan.base_width}, m = {m:g}) but the model's "
            f"growing dims are {seen:g}× the reference's: build the model at width {plan.width} and the "
            f"reference at the base width {plan.base_width}, or pass the factory as reference"
        )
