"""``diagnose``: train proxies at several widths (or load their checkpoints), compare the top
singular values of their weight matrices, and say whether it is safe to scale up.

This is the Python side of ``hptransfer diagnose``; the CLI is a thin shell over it.

Example:
    >>> from hptransfer.diagnostics import diagnose
    >>> rep = diagnose("mlp", [32, 64, 128], rule="mup-wd-sqrt", steps=50)  # doctest: +SKIP
    >>> rep.safe, rep.calibration.describe()                                # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hptransfer.diagnostics.components import COMPONENTS
from hptransfer.diagnostics.coord import coord_check
from hptransfer.diagnostics.fit import (
    Calibration,
    PowerLawFit,
    Thresholds,
    TrainedExponents,
    calibrate_two_rules,
)
from hptransfer.diagnostics.report import (
    MIN_TIMESCALES,
    DiagnosticError,
    SpectralReport,
    cross_width_report,
    looks_untrained,
)
from hptransfer.diagnostics.spectral import (
    LayerSpectrum,
    NonFiniteWeightError,
    SpectralCache,
    model_spectrum,
)
from hptransfer.factories import ModelChoice, resolve_model
from hptransfer.scaling import ConfigError, ParamClass, ProxyConfig, ScalingRule, get_rule, suggest
from hptransfer.scaling.plan import GroupHyper, Plan

__all__ = [
    "Coverage",
    "ModelChoice",
    "calibrate_classes_from_reports",
    "calibrate_from_reports",
    "check_architectures",
    "compare_rules",
    "component_exponents",
    "default_steps",
    "diagnose",
    "diagnose_checkpoints",
    "load_checkpoints",
    "resolve_model",
    "rule_exponents",
    "timescale_coverage",
]

ProgressFn = Callable[[int, int, int], None]  # (width, step, total steps)


class _WarmCache(SpectralCache):
    """A :class:`SpectralCache` that never warm-starts from degenerate vectors: a zero matrix
    (the zero-initialised readout at step 0) leaves zero vectors in the cache, and a warm start
    from them kept that layer's sigma_max at 0 for the whole run."""

    def get(self, name: str, shape: tuple[int, int]) -> torch.Tensor | None:
        v = super().get(name, shape)
        if v is None or not bool(torch.isfinite(v).all()) or bool((v.norm(dim=0) < 0.5).any()):
            return None
        return v


def rule_exponents(rule: ScalingRule) -> tuple[float, float]:
    """Hidden-matrix (lr, wd) width exponents of a rule, for the calibration."""
    hidden = rule.exponents[ParamClass.HIDDEN]
    return hidden.lr, hidden.wd


def _component_group(plan: Plan, comp: str) -> GroupHyper:
    """The plan's hyperparameters for a component: the readout's class, or the hidden
    matrices' attention / MLP kind (their own wd under ``ProxyConfig.wd_exponents``)."""
    return plan["output"] if comp == "output" else plan.group_for("hidden", comp)


def component_exponents(
    cfg: ProxyConfig, rule: str | ScalingRule | None, widths: Sequence[int]
) -> dict[str, TrainedExponents]:
    """The width exponents (lr, wd, multiplier) each component trains with, read off the
    plans at the smallest and largest width (so per-class ``wd_exponents`` and every rule
    are covered without knowing their algebra). Components without weight decay are left out.

    Example:
        >>> from hptransfer.models import builtin_config
        >>> ex = component_exponents(builtin_config("llama"), "mup-wd-sqrt", [32, 128])
        >>> round(ex["mlp"].lr, 9), round(ex["mlp"].wd, 9), round(ex["output"].wd, 9)
        (-1.0, 0.5, 0.5)
    """
    lo, hi = min(widths), max(widths)
    if lo == hi:
        raise ValueError("component_exponents needs two different widths")
    p_lo, p_hi = suggest(cfg, lo, rule), suggest(cfg, hi, rule)
    span = math.log(hi / lo)
    out: dict[str, TrainedExponents] = {}
    for comp in COMPONENTS:
        a, b = _component_group(p_lo, comp), _component_group(p_hi, comp)
        if not (a.weight_decay > 0 and b.weight_decay > 0):
            continue
        out[comp] = TrainedExponents(
            lr=math.log(b.lr / a.lr) / span,
            wd=math.log(b.weight_decay / a.weight_decay) / span,
            multiplier=math.log(b.multiplier / a.multiplier) / span,
        )
    return out


def _rule_component_exponents(rule: ScalingRule) -> dict[str, TrainedExponents]:
    """Component exponents from a rule's rows (no config: no per-class overrides)."""
    out = {}
    for comp, cls in (
        ("attention", ParamClass.HIDDEN),
        ("mlp", ParamClass.HIDDEN),
        ("output", ParamClass.OUTPUT),
    ):
        ex = rule.exponents[cls]
        if ex.decay:
            out[comp] = TrainedExponents(ex.lr, ex.wd, ex.multiplier)
    return out


def _factory_for(
    spec: ModelChoice, rule: str | None, model_kwargs: Mapping[str, Any]
) -> Callable[[int], nn.Module]:
    if spec.factory is not None:
        return spec.factory
    from hptransfer.models import build_model

    name = spec.builtin
    assert name is not None

    def factory(w: int) -> nn.Module:
        return build_model(name, w, suggest(spec.config, w, rule), **model_kwargs)

    return factory


def _data(spec: ModelChoice, data_kwargs: Mapping[str, Any], model_kwargs: Mapping[str, Any]) -> Any:
    from hptransfer.training import get_data

    dkw = dict(data_kwargs)
    if spec.task == "charlm":
        dkw.setdefault("seq_len", model_kwargs.get("seq_len", 64))
        dkw.setdefault("val_sequences", 64)
    return get_data(spec.task, **dkw)


def diagnose(
    model: str | Callable[[int], nn.Module],
    widths: Sequence[int],
    config: ProxyConfig | None = None,
    rule: str | None = None,
    steps: int | None = None,
    *,
    task: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    record_every: int | None = None,
    average_last: float = 0.25,
    thresholds: Thresholds | None = None,
    gate: Iterable[str] = ("hidden",),
    coord: bool = True,
    coord_steps: int = 4,
    k: int = 1,
    tol: float = 1e-4,
    data_kwargs: Mapping[str, Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    schedule: str = "constant",
    progress: ProgressFn | None = None,
) -> SpectralReport:
    """Train the proxy at each width under ``rule`` and compare sigma_max across widths.

    Args:
        model: built-in name (``llama``, ``mlp``), ``"MODULE:FACTORY"`` or a callable
            ``factory(width) -> nn.Module`` (it must accept the task's inputs).
        widths: at least two widths.
        config: base width and hyperparameters (default: the built-in's config).
        rule: width rule (default: the config's); its hidden-matrix exponents feed the
            calibration of the wd exponent.
        steps: training steps per width (default: :func:`default_steps`, enough for
            :data:`DEFAULT_TIMESCALES` AdamW timescales ``tau = 1/(lr·wd)`` at the slowest width).
            sigma_max reaches its steady state only after several; a shorter run is inconclusive.
        record_every: steps between spectra for the history (default ``steps // 20``).
        average_last: the fitted sigma_max of a layer is the geometric mean of its recorded
            values over this last fraction of the run (default: the last quarter), not the
            final value alone: in the AdamW steady state sigma_max fluctuates from step to
            step, and averaging narrows the slope intervals. 0: the final value only.
        coord: also run the muP coordinate check (``coord_steps`` steps on one batch).
        progress: ``progress(width, step, steps)`` after each recorded step.

    A width whose factory, training or spectrum fails is skipped and named in
    ``report.problems``; the others are kept.

    Raises:
        DiagnosticError: fewer than two widths (given, or left after failures).
        ConfigError: bad model, task, rule or width.
    """
    from hptransfer.scaling.torch_adapter import meta_model, parametrize
    from hptransfer.training import train

    spec = resolve_model(model, task=task, config=config)
    cfg = spec.config
    ws = _check_widths(widths)
    rule_obj = cfg.with_rule(rule).scaling_rule() if rule else cfg.scaling_rule()
    for w in ws:
        suggest(cfg, w, rule)  # raises WidthError naming a width the config cannot take
    if steps is None:
        steps = default_steps(cfg, rule, ws)
    mkw = dict(model_kwargs or {})
    data = _data(spec, data_kwargs or {}, mkw)
    factory = _factory_for(spec, rule, mkw)
    if not 0 <= average_last < 1:
        raise ConfigError(f"average_last must be in [0, 1), got {average_last}")
    every = record_every or max(1, steps // 20)
    spectra: dict[int, dict[str, LayerSpectrum]] = {}
    history: dict[int, list[tuple[int, dict[str, float]]]] = {}
    val_loss: dict[int, float] = {}
    problems: list[str] = []
    for w in ws:
        plan = suggest(cfg, w, rule)
        ref_width = cfg.base_width if cfg.base_width != w else 2 * w
        cache = _WarmCache()
        hist: list[tuple[int, dict[str, float]]] = []
        try:
            torch.manual_seed(seed)
            net = factory(w)
            with warnings.catch_warnings():
                if spec.builtin is not None:
                    warnings.simplefilter("ignore")  # built-ins scale attention themselves
                table = parametrize(
                    net, plan, meta_model(factory, ref_width), attention_handled=spec.builtin is not None
                )
            hist.append((0, _sigmas(model_spectrum(net, k=k, tol=tol, cache=cache))))

            def record(
                step: int,
                _val: float,
                net: nn.Module = net,
                cache: SpectralCache = cache,
                hist: list[tuple[int, dict[str, float]]] = hist,
                w: int = w,
            ) -> None:
                if all(torch.isfinite(p).all() for p in net.parameters()):
                    hist.append((step, _sigmas(model_spectrum(net, k=k, tol=tol, cache=cache))))
                if progress is not None:
                    progress(w, step, steps)

            result = train(
                net,
                plan,
                table,
                data,
                steps=steps,
                batch_size=batch_size,
                seed=seed,
                callback=record,
                eval_every=every,
                schedule=schedule,
            )
            if progress is not None:
                progress(w, steps, steps)
            if result.diverged:
                problems.append(
                    f"width {w}: training diverged (NaN/inf loss) at step "
                    f"{result.steps + 1}; width skipped (try a smaller lr)"
                )
                continue
            spectra[w] = model_spectrum(net, k=k, tol=tol, cache=cache)
            if not hist or hist[-1][0] != result.steps:
                hist.append((result.steps, _sigmas(spectra[w])))
            history[w] = hist
            spectra[w] = _averaged(spectra[w], hist, steps * (1 - average_last) if average_last else None)
            val_loss[w] = result.val_loss
        except (NonFiniteWeightError, DiagnosticError) as exc:
            problems.append(f"width {w}: {exc}")
        except Exception as exc:  # a user factory may fail in any way: keep the other widths
            problems.append(f"width {w}: {type(exc).__name__}: {exc}")
    if len(spectra) < 2:
        raise DiagnosticError(
            f"only {len(spectra)} of {len(ws)} widths produced a model; need two. " + " | ".join(problems)
        )
    lr_e, wd_e = rule_exponents(rule_obj)
    report = cross_width_report(
        spectra,
        thresholds=thresholds,
        gate=gate,
        lr_exponent=lr_e,
        wd_exponent=wd_e,
        rule=rule_obj.name,
        problems=problems,
        class_exponents=component_exponents(cfg, rule, sorted(spectra)),
    )
    report.history, report.val_loss = history, val_loss
    cover = timescale_coverage(cfg, rule, sorted(spectra), steps)
    report.timescales, report.timescale_advice = cover.covered, cover.advice
    report.timescales_by_width = cover.by_width
    report.notes.append(cover.note)
    if coord:
        x, y = data.batch(min(batch_size, 16), torch.Generator().manual_seed(seed + 1))
        report.coord = coord_check(
            factory, sorted(spectra), (x, y), data.loss, steps=coord_steps, config=cfg, rule=rule
        )
    return report


def _averaged(
    spec: dict[str, LayerSpectrum], hist: Sequence[tuple[int, dict[str, float]]], start: float | None
) -> dict[str, LayerSpectrum]:
    """``spec`` with each sigma_max replaced by the geometric mean of its history from step
    ``start`` on (the final spectrum when ``start`` is None or nothing was recorded there)."""
    if start is None:
        return spec
    tail = [d for s, d in hist if s >= start and s > 0]
    out = {}
    for name, ls in spec.items():
        vals = [d[name] for d in tail if name in d and d[name] > 0 and math.isfinite(d[name])]
        if len(vals) < 2:
            out[name] = ls
            continue
        mean = math.exp(sum(map(math.log, vals)) / len(vals))
        out[name] = replace(ls, sigma=(mean, *ls.sigma[1:]))
    return out


def _sigmas(spec: Mapping[str, LayerSpectrum]) -> dict[str, float]:
    return {name: s.sigma_max for name, s in spec.items()}


#: AdamW timescales a default-length run covers at its slowest width.
DEFAULT_TIMESCALES = 4.0
#: Steps of a default-length run when the hidden matrices have no weight decay (no timescale).
FALLBACK_STEPS = 256


def default_steps(cfg: ProxyConfig, rule: str | None, widths: Sequence[int]) -> int:
    """Training steps that cover :data:`DEFAULT_TIMESCALES` AdamW timescales at the slowest width
    (:data:`FALLBACK_STEPS` without weight decay).

    Example:
        >>> from dataclasses import replace
        >>> from hptransfer.models import builtin_config
        >>> cfg = replace(builtin_config("llama"), weight_decay=1.0)   # lr 2^-6: tau = 64 steps
        >>> default_steps(cfg, "linear", [16, 128]), default_steps(cfg, "sqrt", [16, 128])
        (256, 363)
    """
    taus = [_hidden_tau(suggest(cfg, w, rule)) for w in widths]
    finite = [t for t in taus if math.isfinite(t)]
    if not finite:
        return FALLBACK_STEPS
    return max(1, math.ceil(DEFAULT_TIMESCALES * max(finite) - 1e-9))


def _hidden_tau(plan: Plan) -> float:
    """The slowest AdamW timescale among the hidden matrices (attention and MLP kinds)."""
    return max(_component_group(plan, comp).tau for comp in ("attention", "mlp"))


def run_timescales(plan: Plan, steps: int) -> dict[str, float]:
    """AdamW timescales a run of ``steps`` covers, per component: ``steps / tau`` with
    ``tau = 1/(lr·wd)`` from the plan (``attention``, ``mlp``, ``output``; components without
    weight decay have no timescale and are left out).

    Example:
        >>> from hptransfer.models import builtin_config
        >>> plan = suggest(builtin_config("llama"), 64, "linear")   # lr 2^-6, wd 0.1: tau 640
        >>> run_timescales(plan, 1280)
        {'attention': 2.0, 'mlp': 2.0, 'output': 2.0}
    """
    out = {}
    for comp in COMPONENTS:
        tau = _component_group(plan, comp).tau
        if math.isfinite(tau):
            out[comp] = steps / tau
    return out


@dataclass(frozen=True)
class Coverage:
    """How many AdamW timescales ``tau = 1/(lr·wd)`` a run covers.

    ``covered`` (what gates the outcome) is for hidden matrices at the slowest width and kind;
    ``by_width`` has every width and component (:func:`run_timescales`)."""

    taus: dict[int, float]  # width -> slowest hidden tau in steps (inf without weight decay)
    steps: int
    covered: float  # steps / the longest hidden tau (inf without weight decay)
    note: str
    advice: str  # how to reach MIN_TIMESCALES ("" when covered)
    by_width: dict[int, dict[str, float]] = field(default_factory=dict)  # width -> {component: steps/tau}


def _timescales_text(by_width: Mapping[int, Mapping[str, float]]) -> str:
    """``width 16: hidden 4, output 4; width 32: …`` (attention and MLP shown as hidden when
    equal; one entry when every width covers the same)."""

    def one(d: Mapping[str, float]) -> str:
        items = dict(d)
        if "attention" in items and "mlp" in items and math.isclose(items["attention"], items["mlp"]):
            items = {
                "hidden": items["attention"],
                **{k: v for k, v in items.items() if k not in ("attention", "mlp")},
            }
        return ", ".join(f"{k} {v:.2g}" for k, v in items.items()) or "no weight decay"

    texts = {w: one(d) for w, d in by_width.items()}
    if len(set(texts.values())) == 1 and len(texts) > 1:
        return "every width: " + next(iter(texts.values()))
    return "; ".join(f"width {w}: {t}" for w, t in texts.items())


def timescale_coverage(cfg: ProxyConfig, rule: str | None, widths: Sequence[int], steps: int) -> Coverage:
    """AdamW timescales covered by ``steps``, per width and component, and at the slowest
    width for the hidden matrices, with what would cover
    :data:`~hptransfer.diagnostics.report.MIN_TIMESCALES` of them.

    Example:
        >>> from hptransfer.models import builtin_config
        >>> cov = timescale_coverage(builtin_config("llama"), "linear", [32, 64], 640)
        >>> round(cov.covered, 3)   # lr 2^-6, wd 0.1: tau = 640 steps at every width
        1.0
        >>> cov.by_width[64]
        {'attention': 1.0, 'mlp': 1.0, 'output': 1.0}
    """
    plans = {w: suggest(cfg, w, rule) for w in widths}
    taus = {w: _hidden_tau(p) for w, p in plans.items()}
    by_width = {w: run_timescales(p, steps) for w, p in plans.items()}
    finite = [t for t in taus.values() if math.isfinite(t)]
    if not finite:
        note = "hidden matrices have no weight decay: sigma_max has no AdamW steady state"
        return Coverage(taus, steps, math.inf, note, "", by_width)
    longest = max(finite)
    covered = steps / longest
    note = (
        "AdamW timescale tau = 1/(lr·wd) of hidden matrices: "
        + ", ".join(f"{t:.0f}" for t in taus.values())
        + " steps at widths "
        + ", ".join(map(str, widths))
        + f"; {steps} steps = {covered:.2g} tau at the slowest width"
    )
    advice = ""
    if covered < MIN_TIMESCALES:
        need_steps = math.ceil(MIN_TIMESCALES * longest)
        need_wd = cfg.weight_decay * MIN_TIMESCALES / covered
        advice = (
            f"train ≥ {need_steps} steps (--steps), or raise the base weight decay to "
            f"≥ {need_wd:.3g} (--wd; lr·wd sets tau)"
        )
        note += f" (< {MIN_TIMESCALES:g} tau: sigma_max is not at its steady state yet)"
    note += ". Timescales covered (steps/tau), " + _timescales_text(by_width)
    return Coverage(taus, steps, covered, note, advice, by_width)


def _check_widths(widths: Sequence[int]) -> list[int]:
    ws: list[int] = []
    for raw in widths:
        try:
            w = operator.index(raw)  # ints, numpy ints; not floats or bools
        except TypeError:
            w = -1
        if isinstance(raw, bool) or w < 1:
            raise ConfigError(f"widths must be positive integers, got {raw!r}")
        if w in ws:
            raise ConfigError(f"width {w} is given twice")
        ws.append(w)
    if len(ws) < 2:
        raise DiagnosticError(
            f"the spectral diagnostic compares widths: got {len(ws)}; give at least two, "
            "e.g. --widths 128,256,512"
        )
    return sorted(ws)


_WIDTH_IN_NAME = re.compile(r"(\d+)(?!.*\d)")
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} is not a file (a directory?); give state_dict files")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """One checkpoint file as ``{name: tensor}``; any failure is one ConfigError naming the file
    and the cause (no torch warnings leak)."""
    _check_file(path)
    with path.open("rb") as fh:
        head = fh.read(len(_LEGACY_TORCH_MAGIC))
    if not head:
        raise ConfigError(f"checkpoint {path} is empty (0 bytes): the save was interrupted?")
    is_zip = head.startswith(_ZIP_MAGIC)
    is_legacy = head.startswith(_LEGACY_TORCH_MAGIC)
    if not (is_zip or is_legacy):
        kind = "a plain pickle" if head[:1] == b"\x80" else "neither a torch.save archive nor a pickle"
        raise ConfigError(
            f"checkpoint {path} is not a torch.save file ({kind}); save the weights with "
            "torch.save(model.state_dict(), path)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        unsupported = re.search(r"Unsupported global: (?:GLOBAL )?([^\n]+?)(?: was not|\n|$)", text)
        if unsupported:
            cause = (
                f"it holds a pickled object ({unsupported.group(1).strip()}), which weights_only=True "
                "refuses to run; save model.state_dict() instead"
            )
        else:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            cause = f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__
            cause = "the file is truncated or corrupt (" + cause + ")"
        raise ConfigError(f"cannot load checkpoint {path}: {cause}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"checkpoint {path} holds no tensors; expected a state_dict (name -> tensor)")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _matrix_shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items() if v.ndim >= 2 and v.is_floating_point()}


def check_architectures(sds: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Refuse state_dicts of different architectures: the same weight matrices (names and
    ranks) must be present in every one. Keys of ``sds`` name the sources (file or width).

    Raises:
        DiagnosticError: a matrix missing from some source, or one whose rank differs.
    """
    shapes = {src: _matrix_shapes(sd) for src, sd in sds.items()}
    srcs = list(shapes)
    first = srcs[0]
    for other in srcs[1:]:
        a, b = shapes[first], shapes[other]
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        if only_a or only_b:
            common = len(set(a) & set(b))
            detail = "; ".join(
                f"only in {src}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''} ({len(names)})"
                for src, names in ((first, only_a), (other, only_b))
                if names
            )
            raise DiagnosticError(
                f"{first} and {other} are not the same architecture at two widths: "
                f"{common} weight matrices in common, {detail}"
            )
        rank = [k for k in a if len(a[k]) != len(b[k])]
        if rank:
            raise DiagnosticError(
                f"{first} and {other}: {rank[0]!r} has shape {a[rank[0]]} vs {b[rank[0]]}: "
                "not the same architecture"
            )


def _check_width_order(entries: list[tuple[int, str, dict[str, torch.Tensor]]]) -> None:
    """Widths (from names or ``--widths``) must agree with the tensor shapes: larger widths
    have larger matrices, and some dimension grows by the width ratio."""
    entries.sort(key=lambda e: sum(math.prod(s) for s in _matrix_shapes(e[2]).values()))
    for (w_a, src_a, sd_a), (w_b, src_b, sd_b) in itertools.pairwise(entries):
        sa, sb = _matrix_shapes(sd_a), _matrix_shapes(sd_b)
        grown = [(k, sa[k], sb[k]) for k in sa if k in sb and len(sa[k]) == len(sb[k]) and sa[k] != sb[k]]
        if not grown:
            raise DiagnosticError(
                f"{src_a} (width {w_a}) and {src_b} (width {w_b}) have the same matrix shapes: "
                "they are not proxies of different widths"
            )
        if w_b <= w_a:
            k, s_a, s_b = grown[0]
            raise DiagnosticError(
                f"the widths contradict the tensor shapes: {src_a} says width {w_a} but is smaller "
                f"than {src_b} (width {w_b}), e.g. {k} {s_a} vs {s_b}; fix --widths or the file names"
            )
        ratios = {b / a for _, s_a, s_b in grown for a, b in zip(s_a, s_b) if a != b and a > 0}
        target = w_b / w_a
        if not any(abs(r / target - 1) <= 0.1 for r in ratios):
            k, s_a, s_b = grown[0]
            seen = ", ".join(f"×{r:.3g}" for r in sorted(ratios)[:4])
            raise DiagnosticError(
                f"the widths contradict the tensor shapes: {src_a} → {src_b} is width ×{target:.3g} "
                f"({w_a} → {w_b}) but the matrices grow {seen} (e.g. {k} {s_a} → {s_b}); "
                "fix --widths or the file names"
            )


def load_checkpoints(
    paths: Sequence[str | Path], widths: Sequence[int] | None = None
) -> dict[int, dict[str, torch.Tensor]]:
    """Load state_dicts (``torch.load(weights_only=True)``), keyed by width, narrowest first.

    The width is the matching entry of ``widths``, else the last number in the file name
    (``w128.pt`` → 128). A ``{"state_dict": …}`` or ``{"model": …}`` wrapper is unwrapped.
    The files may come in any order; the widths must agree with the tensor shapes.

    Raises:
        ConfigError: a missing, empty, unreadable or non-torch file, an unknown width, two
            files of one width.
        DiagnosticError: different architectures, or widths that contradict the shapes.
    """
    if widths is not None and len(widths) != len(paths):
        raise ConfigError(f"{len(paths)} checkpoints but {len(widths)} widths; give one width per file")
    entries: list[tuple[int, str, dict[str, torch.Tensor]]] = []
    seen: dict[int, str] = {}
    for i, raw in enumerate(paths):
        path = Path(raw)
        _check_file(path)
        if widths is not None:
            w = int(widths[i])
        else:
            m = _WIDTH_IN_NAME.search(path.stem)
            if m is None:
                raise ConfigError(
                    f"cannot tell the width of checkpoint {str(raw)!r}: name it like w128.pt or pass "
                    "--widths in the same order as --checkpoints"
                )
            w = int(m.group(1))
        if w < 1:
            raise ConfigError(f"checkpoint {path}: width must be a positive integer, got {w}")
        if w in seen:
            raise ConfigError(f"two checkpoints for width {w} ({seen[w]}, {path.name}); one per width")
        seen[w] = path.name
        entries.append((w, str(path), _load_state_dict(path)))
    if len(entries) >= 2:
        check_architectures({src: sd for _, src, sd in entries})
        _check_width_order(entries)
    return {w: sd for w, _, sd in sorted(entries, key=lambda e: e[0])}


def diagnose_checkpoints(
    checkpoints: Mapping[int, Mapping[str, torch.Tensor]] | Sequence[str | Path],
    *,
    widths: Sequence[int] | None = None,
    rule: str | ScalingRule | None = None,
    thresholds: Thresholds | None = None,
    gate: Iterable[str] = ("hidden",),
    k: int = 1,
    tol: float = 1e-4,
    steps: int | None = None,
    config: ProxyConfig | None = None,
) -> SpectralReport:
    """The spectral diagnostic on saved state_dicts of proxies at several widths (no training).

    Args:
        checkpoints: ``{width: state_dict}`` or file paths (see :func:`load_checkpoints`).
        rule: the rule the proxies were trained with (name or :class:`ScalingRule`); enables
            the calibration of the wd exponent.
        steps / config: how long the proxies trained and their base lr / wd; with both (and a
            rule name), the report knows how many AdamW timescales the checkpoints cover.
            Without them the coverage is unknown and the calibration carries a caveat.

    A checkpoint with non-finite weights is skipped, named in ``report.problems``.

    Raises:
        DiagnosticError: fewer than two checkpoints, different architectures, or widths that
            contradict the tensor shapes.
    """
    if isinstance(checkpoints, Mapping):
        entries = [(int(w), f"width {w}", dict(sd)) for w, sd in checkpoints.items()]
        if len(entries) >= 2:
            check_architectures({src: sd for _, src, sd in entries})
            _check_width_order(entries)
        sds = {w: sd for w, _, sd in entries}
    else:
        sds = load_checkpoints(list(checkpoints), widths)
    if len(sds) < 2:
        raise DiagnosticError(
            f"the spectral diagnostic compares widths: got {len(sds)} checkpoint(s); give at least two"
        )
    problems: list[str] = []
    spectra: dict[int, dict[str, LayerSpectrum]] = {}
    for w in sorted(sds):
        try:
            spectra[w] = model_spectrum(sds[w], k=k, tol=tol)
        except NonFiniteWeightError as exc:
            problems.append(f"width {w}: {exc}")
    if len(spectra) < 2:
        raise DiagnosticError("fewer than two usable checkpoints: " + " | ".join(problems))
    lr_e = wd_e = None
    name = None
    class_exponents = None
    if rule is not None:
        rule_obj = get_rule(rule) if isinstance(rule, str) else rule
        lr_e, wd_e = rule_exponents(rule_obj)
        name = rule_obj.name
        if config is not None:
            class_exponents = component_exponents(config, rule_obj, sorted(spectra))
        else:
            class_exponents = _rule_component_exponents(rule_obj)
    report = cross_width_report(
        spectra,
        thresholds=thresholds,
        gate=gate,
        lr_exponent=lr_e,
        wd_exponent=wd_e,
        rule=name,
        problems=problems,
        class_exponents=class_exponents,
    )
    if steps is not None and config is not None:
        rule_name = name if isinstance(rule, str) else None
        cover = timescale_coverage(config, rule_name, sorted(spectra), steps)
        report.timescales, report.timescale_advice = cover.covered, cover.advice
        report.timescales_by_width = cover.by_width
        report.notes.append(cover.note)
    untrained = report.untrained = looks_untrained(report)
    if untrained:
        report.notes.append(
            f"{len(untrained)} of {len(report.gated())} {'/'.join(report.gate)} matrices look untrained "
            f"(their spectrum is that of a random init at every width, e.g. {untrained[0]}): the law "
            "and the calibration assume the AdamW steady state, several timescales into training"
        )
    if report.calibration is not None and (report.timescales is None or report.timescales < 1):
        report.notes.append(
            "steady-state caveat: "
            + (
                "the checkpoints' training length is unknown (pass the steps and the config)"
                if report.timescales is None
                else f"the checkpoints cover only {report.timescales:.2g} AdamW timescales"
            )
            + "; the calibrated exponent holds only if sigma_max had settled (≥ 3 tau = 1/(lr·wd))"
        )
    return report


def _two_run(runs: Sequence[tuple[float, PowerLawFit, str]]) -> tuple[Calibration, tuple[str, str]] | None:
    """Two-run calibration from ``(wd exponent, fit, rule name)`` runs: the pair whose slopes
    bracket zero (else the two slopes nearest zero), interpolated."""
    best = None
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            (ea, fa, na), (eb, fb, nb) = runs[i], runs[j]
            if ea == eb or fa.alpha == fb.alpha:
                continue
            brackets = fa.alpha * fb.alpha <= 0
            score = (not brackets, abs(fa.alpha) + abs(fb.alpha))
            if best is None or score < best[0]:
                best = (score, (ea, fa, na), (eb, fb, nb))
    if best is None:
        return None
    (ea, fa, na), (eb, fb, nb) = best[1], best[2]
    return calibrate_two_rules(fa, ea, fb, eb), (na, nb)


def calibrate_from_reports(reports: Mapping[str, SpectralReport]) -> tuple[Any, tuple[str, str]] | None:
    """Two-run calibration from reports of one proxy under muP rules with different wd exponents.

    Picks the pair whose pooled slopes bracket zero (else the two slopes nearest zero) and
    interpolates (:func:`~hptransfer.diagnostics.fit.calibrate_two_rules`). Returns
    ``(Calibration, (rule_a, rule_b))`` or None when fewer than two usable reports.
    """
    runs = []
    for name, rep in reports.items():
        cal = rep.calibration
        if rep.pooled is None or cal is None or cal.trained_lr_exponent != -1.0:
            continue
        runs.append((cal.trained_wd_exponent, rep.pooled, name))
    return _two_run(runs)


def calibrate_classes_from_reports(
    reports: Mapping[str, SpectralReport],
) -> dict[str, tuple[Calibration, tuple[str, str]]]:
    """:func:`calibrate_from_reports` per component (attention, mlp, output): each
    component's pooled slope (of its effective weight, see
    :func:`~hptransfer.diagnostics.fit.calibrate_class`) interpolated between two rules, with
    its interval. Components with fewer than two usable reports are left out.
    """
    out: dict[str, tuple[Calibration, tuple[str, str]]] = {}
    for comp in COMPONENTS:
        runs = []
        for name, rep in reports.items():
            cal, fit = rep.class_calibrations.get(comp), rep.class_fits.get(comp)
            if cal is None or fit is None or not math.isclose(cal.trained_lr_exponent, -1.0, abs_tol=1e-9):
                continue
            shift = cal.alpha - fit.alpha  # the forward multiplier's exponent
            effective = replace(
                fit, alpha=cal.alpha, ci=None if fit.ci is None else (fit.ci[0] + shift, fit.ci[1] + shift)
            )
            runs.append((cal.trained_wd_exponent, effective, name))
        two = _two_run(runs)
        if two is not None:
            out[comp] = two
    return out


def compare_rules(
    model: str | Callable[[int], nn.Module],
    widths: Sequence[int],
    rules: Sequence[str],
    config: ProxyConfig | None = None,
    steps: int | None = None,
    **kwargs: Any,
) -> tuple[dict[str, SpectralReport], tuple[Any, tuple[str, str]] | None]:
    """:func:`diagnose` under each rule, plus the two-run wd-exponent calibration.

    Example:
        >>> reports, cal = compare_rules("llama", [32, 64, 128], ["sqrt", "linear"])  # doctest: +SKIP
        >>> cal[0].exponent                                                          # doctest: +SKIP
    """
    reports: dict[str, SpectralReport] = {}
    for rule in rules:
        rep = diagnose(model, widths, config, rule, steps, **kwargs)
        reports[rep.rule or rule] = rep
    return reports, calibrate_from_reports(reports)
