"""``diagnose``: train proxies at several widths (or load their checkpoints), compare the top
singular values of their weight matrices, and say whether it is safe to scale up.

This is the Python side of ``hptransfer diagnose``; the CLI is a thin shell over it.

Example:
    >>> from hptransfer.diagnostics import diagnose
    >>> rep = diagnose("mlp", [32, 64, 128], rule="mup-wd-sqrt", steps=50)  # doctest: +SKIP
    >>> rep.safe, rep.calibration.describe()                                # doctest: +SKIP
"""

from __future__ import annotations

import math
import operator
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hptransfer.diagnostics.coord import coord_check
from hptransfer.diagnostics.fit import Thresholds
from hptransfer.diagnostics.report import DiagnosticError, SpectralReport, cross_width_report
from hptransfer.diagnostics.spectral import (
    LayerSpectrum,
    NonFiniteWeightError,
    SpectralCache,
    model_spectrum,
)
from hptransfer.factories import load_factory
from hptransfer.scaling import ConfigError, ParamClass, ProxyConfig, ScalingRule, get_rule, suggest

__all__ = [
    "ModelSpec",
    "calibrate_from_reports",
    "compare_rules",
    "diagnose",
    "diagnose_checkpoints",
    "load_checkpoints",
    "resolve_model",
    "rule_exponents",
]

ProgressFn = Callable[[int, int, int], None]  # (width, step, total steps)


@dataclass(frozen=True)
class ModelSpec:
    """A model to diagnose: ``factory(width) -> nn.Module``, its task, config and name."""

    factory: Callable[[int], nn.Module] | None  # None: a built-in, built per plan
    builtin: str | None
    task: str
    config: ProxyConfig
    label: str


_BUILTIN_TASK = {"llama": "charlm", "mlp": "regression"}


def resolve_model(
    model: str | Callable[[int], nn.Module], *, task: str | None = None, config: ProxyConfig | None = None
) -> ModelSpec:
    """A built-in name (``llama``, ``mlp``), ``MODULE:FACTORY`` or a callable, as a :class:`ModelSpec`.

    Raises:
        ConfigError: unknown built-in, a module that cannot be imported, a missing attribute
            or a task the built-in data does not have.
    """
    from hptransfer.data import TASKS
    from hptransfer.models import BUILTIN_MODELS, builtin_config

    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if isinstance(model, str) and ":" not in model:
        if model not in BUILTIN_MODELS:
            raise ConfigError(
                f"unknown model {model!r}: give a built-in ({', '.join(BUILTIN_MODELS)}) or "
                "MODULE:FACTORY, a callable taking the width and returning an nn.Module"
            )
        own_task = _BUILTIN_TASK[model]
        if task is not None and task != own_task:
            raise ConfigError(f"built-in model {model!r} trains on task {own_task!r}, not {task!r}")
        return ModelSpec(None, model, own_task, config or builtin_config(model), model)
    if isinstance(model, str):
        factory = load_factory(model)
        label = model
    else:
        factory, label = model, getattr(model, "__name__", "factory")
    task = task or "charlm"
    if config is None:
        base = builtin_config(TASKS[task][1])
        config = replace(base, name=label, head_dim=None, n_heads=None)
    return ModelSpec(factory, None, task, config, label)


def rule_exponents(rule: ScalingRule) -> tuple[float, float]:
    """Hidden-matrix (lr, wd) width exponents of a rule, for the calibration."""
    hidden = rule.exponents[ParamClass.HIDDEN]
    return hidden.lr, hidden.wd


def _factory_for(
    spec: ModelSpec, rule: str | None, model_kwargs: Mapping[str, Any]
) -> Callable[[int], nn.Module]:
    if spec.factory is not None:
        return spec.factory
    from hptransfer.models import build_model

    name = spec.builtin
    assert name is not None

    def factory(w: int) -> nn.Module:
        return build_model(name, w, suggest(spec.config, w, rule), **model_kwargs)

    return factory


def _data(spec: ModelSpec, data_kwargs: Mapping[str, Any], model_kwargs: Mapping[str, Any]) -> Any:
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
    steps: int = 200,
    *,
    task: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    record_every: int | None = None,
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
        steps: training steps per width. sigma_max reaches its steady state only after several
            AdamW timescales ``tau = 1/(lr·wd)``; the report notes when the run is shorter.
        record_every: steps between spectra for the history (default ``steps // 10``).
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
    mkw = dict(model_kwargs or {})
    data = _data(spec, data_kwargs or {}, mkw)
    factory = _factory_for(spec, rule, mkw)
    every = record_every or max(1, steps // 10)
    spectra: dict[int, dict[str, LayerSpectrum]] = {}
    history: dict[int, list[tuple[int, dict[str, float]]]] = {}
    val_loss: dict[int, float] = {}
    problems: list[str] = []
    for w in ws:
        plan = suggest(cfg, w, rule)
        ref_width = cfg.base_width if cfg.base_width != w else 2 * w
        cache = SpectralCache()
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
    )
    report.history, report.val_loss = history, val_loss
    report.notes.extend(_timescale_notes(cfg, rule, sorted(spectra), steps))
    if coord:
        x, y = data.batch(min(batch_size, 16), torch.Generator().manual_seed(seed + 1))
        report.coord = coord_check(
            factory, sorted(spectra), (x, y), data.loss, steps=coord_steps, config=cfg, rule=rule
        )
    return report


def _sigmas(spec: Mapping[str, LayerSpectrum]) -> dict[str, float]:
    return {name: s.sigma_max for name, s in spec.items()}


def _timescale_notes(cfg: ProxyConfig, rule: str | None, widths: Sequence[int], steps: int) -> list[str]:
    taus = {w: suggest(cfg, w, rule)["hidden"].tau for w in widths}
    finite = [t for t in taus.values() if math.isfinite(t)]
    if not finite:
        return ["hidden matrices have no weight decay: sigma_max has no AdamW steady state"]
    longest = max(finite)
    runs = steps / longest
    note = (
        "AdamW timescale tau = 1/(lr·wd) of hidden matrices: "
        + ", ".join(f"{t:.0f}" for t in taus.values())
        + " steps at widths "
        + ", ".join(map(str, widths))
        + f"; {steps} steps = {runs:.2g} tau at the slowest width"
    )
    if runs < 3:
        note += " (< 3 tau: sigma_max is not at its steady state yet; the law and the calibration "
        note += "assume it is; train longer or raise lr·wd)"
    return [note]


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


def load_checkpoints(
    paths: Sequence[str | Path], widths: Sequence[int] | None = None
) -> dict[int, dict[str, torch.Tensor]]:
    """Load state_dicts (``torch.load(weights_only=True)``), keyed by width.

    The width is the matching entry of ``widths``, else the last number in the file name
    (``w128.pt`` → 128). A ``{"state_dict": …}`` or ``{"model": …}`` wrapper is unwrapped.

    Raises:
        ConfigError: a missing or unreadable file, an unknown width, two files of one width.
    """
    if widths is not None and len(widths) != len(paths):
        raise ConfigError(f"{len(paths)} checkpoints but {len(widths)} widths; give one width per file")
    out: dict[int, dict[str, torch.Tensor]] = {}
    for i, raw in enumerate(paths):
        path = Path(raw)
        if widths is not None:
            w = int(widths[i])
        else:
            m = _WIDTH_IN_NAME.search(path.stem)
            if m is None:
                raise ConfigError(
                    f"cannot tell the width of {path.name}: name it like w128.pt or pass --widths "
                    "in the same order as --checkpoints"
                )
            w = int(m.group(1))
        if w in out:
            raise ConfigError(f"two checkpoints for width {w} ({path.name}); one per width")
        if not path.exists():
            raise ConfigError(f"checkpoint not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(
                f"cannot load {path} as a state_dict (weights_only=True): {str(exc).splitlines()[0][:200]}"
            ) from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
                obj = obj[key]
        if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ConfigError(f"{path} holds no tensors; expected a state_dict (name -> tensor)")
        out[w] = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return out


def diagnose_checkpoints(
    checkpoints: Mapping[int, Mapping[str, torch.Tensor]] | Sequence[str | Path],
    *,
    widths: Sequence[int] | None = None,
    rule: str | ScalingRule | None = None,
    thresholds: Thresholds | None = None,
    gate: Iterable[str] = ("hidden",),
    k: int = 1,
    tol: float = 1e-4,
) -> SpectralReport:
    """The spectral diagnostic on saved state_dicts of proxies at several widths (no training).

    Args:
        checkpoints: ``{width: state_dict}`` or file paths (see :func:`load_checkpoints`).
        rule: the rule the proxies were trained with (name or :class:`ScalingRule`); enables
            the calibration of the wd exponent.

    A checkpoint with non-finite weights is skipped, named in ``report.problems``.
    """
    if isinstance(checkpoints, Mapping):
        sds = dict(checkpoints)
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
    if rule is not None:
        rule_obj = get_rule(rule) if isinstance(rule, str) else rule
        lr_e, wd_e = rule_exponents(rule_obj)
        name = rule_obj.name
    return cross_width_report(
        spectra,
        thresholds=thresholds,
        gate=gate,
        lr_exponent=lr_e,
        wd_exponent=wd_e,
        rule=name,
        problems=problems,
    )


def calibrate_from_reports(reports: Mapping[str, SpectralReport]) -> tuple[Any, tuple[str, str]] | None:
    """Two-run calibration from reports of one proxy under muP rules with different wd exponents.

    Picks the pair whose pooled slopes bracket zero (else the two slopes nearest zero) and
    interpolates (:func:`~hptransfer.diagnostics.fit.calibrate_two_rules`). Returns
    ``(Calibration, (rule_a, rule_b))`` or None when fewer than two usable reports.
    """
    from hptransfer.diagnostics.fit import calibrate_two_rules

    runs = []
    for name, rep in reports.items():
        cal = rep.calibration
        if rep.pooled is None or cal is None or cal.trained_lr_exponent != -1.0:
            continue
        runs.append((cal.trained_wd_exponent, rep.pooled, name))
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


def compare_rules(
    model: str | Callable[[int], nn.Module],
    widths: Sequence[int],
    rules: Sequence[str],
    config: ProxyConfig | None = None,
    steps: int = 200,
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
