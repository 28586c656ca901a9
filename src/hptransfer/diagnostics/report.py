"""Cross-width spectral report: match layers of proxies at several widths, fit, give a verdict.

Pure Python on top of :mod:`hptransfer.diagnostics.fit` (no torch): it takes per-width layer
spectra (anything with ``name``, ``layer_type``, ``shape``, ``sigma_max``, ``spectral_to_rms``,
``stable_rank``, e.g. :class:`~hptransfer.diagnostics.spectral.LayerSpectrum`).

Layers are matched by name and layer type. Each matched matrix gets a class from how its shape
changes between the smallest and the largest width: ``hidden`` (both dims grow), ``output``
(fan-in grows), ``input`` (fan-out grows) or ``fixed``. The overall verdict (and the exit code
of ``hptransfer diagnose``) looks at the ``gate`` classes, hidden matrices by default: these are
the ones the steady-state law ``sigma_max ≈ sqrt(lr/wd)·d^0.75`` speaks about.

Outcomes (:attr:`SpectralReport.outcome`, exit codes of ``hptransfer diagnose``):

* ``safe`` (0): every gated layer conclusively width-invariant, and trained runs cover at least
  ``min_timescales`` AdamW timescales (sigma_max near its steady state);
* ``drift`` (1): a gated layer conclusively grows or shrinks, on runs long enough;
* ``inconclusive`` (3): anything else; :meth:`SpectralReport.missing_evidence` says what would
  make the run conclusive (more steps, a larger lr·wd, another width).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hptransfer.diagnostics.components import COMPONENTS, component
from hptransfer.diagnostics.condition import (
    FAR_FACTOR,
    condition_row,
    condition_target,
    fans,
    is_embedding,
)
from hptransfer.diagnostics.fit import (
    Calibration,
    LayerVerdict,
    PowerLawFit,
    Thresholds,
    TrainedExponents,
    Verdict,
    calibrate_class,
    calibrate_wd_exponent,
    fit_power_law,
    intervals_overlap,
    law_alpha,
    pooled_fit,
    verdict,
)

__all__ = [
    "EXIT_CODES",
    "MIN_TIMESCALES",
    "DiagnosticError",
    "LayerRow",
    "SpectralReport",
    "cross_width_report",
    "layer_class",
    "looks_untrained",
]

WD_CONVENTION = "torch.optim.AdamW weight_decay (each step decays p by lr·wd·p)"


#: Exit codes of ``hptransfer diagnose`` per outcome (2 is bad input).
EXIT_CODES = {"safe": 0, "drift": 1, "inconclusive": 3}

#: AdamW timescales a run must cover before sigma_max counts as steady.
MIN_TIMESCALES = 3.0


class DiagnosticError(ValueError):
    """Input the diagnostic cannot use (one width, nothing matched…); the message says why."""


class _Spectrum(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def layer_type(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def sigma_max(self) -> float: ...

    @property
    def spectral_to_rms(self) -> float: ...

    @property
    def stable_rank(self) -> float: ...


def layer_class(small: Sequence[int], large: Sequence[int], *, embedding: bool = False) -> str:
    """``hidden`` / ``output`` / ``input`` / ``fixed`` from a matrix's shapes at two widths
    (``(fan_out, fan_in·k…)``, torch's layout for Linear and conv kernels; an embedding table
    ``(vocab, width)`` is read the other way round: its width dimension is the fan-out)."""
    out_grows = small[0] != large[0]
    in_grows = math.prod(small[1:]) != math.prod(large[1:])
    if embedding:
        out_grows, in_grows = in_grows, out_grows
    if out_grows and in_grows:
        return "hidden"
    if in_grows:
        return "output"
    if out_grows:
        return "input"
    return "fixed"


@dataclass
class LayerRow:
    """One layer across widths."""

    name: str
    layer_type: str
    param_class: str
    sigma: dict[int, float]
    spectral_to_rms: dict[int, float]
    stable_rank: dict[int, float]
    shapes: dict[int, tuple[int, ...]]
    fit: PowerLawFit | None = None
    verdict: LayerVerdict | None = None
    note: str = ""
    component: str = "other"  # attention / mlp / output / other (components.component)
    # width -> sigma_max / sqrt(fan_out/fan_in) (the spectral condition; empty for embeddings)
    condition: dict[int, float] = field(default_factory=dict)

    def far_widths(self) -> list[int]:
        """Widths where the matrix is far from the spectral condition (beyond ×FAR_FACTOR)."""
        return [w for w, r in sorted(self.condition.items()) if not 1 / FAR_FACTOR <= r <= FAR_FACTOR]

    @property
    def ratio(self) -> float | None:
        if len(self.sigma) < 2:
            return None
        ws = sorted(self.sigma)
        return self.sigma[ws[-1]] / self.sigma[ws[0]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer_type": self.layer_type,
            "class": self.param_class,
            "component": self.component,
            "sigma_max": {str(w): v for w, v in sorted(self.sigma.items())},
            "spectral_to_rms": {str(w): v for w, v in sorted(self.spectral_to_rms.items())},
            "stable_rank": {str(w): v for w, v in sorted(self.stable_rank.items())},
            "shapes": {str(w): list(s) for w, s in sorted(self.shapes.items())},
            "ratio": self.ratio,
            "alpha": None if self.fit is None else self.fit.alpha,
            "alpha_ci": None if self.fit is None or self.fit.ci is None else list(self.fit.ci),
            "verdict": None if self.verdict is None else str(self.verdict.verdict),
            "conclusive": None if self.verdict is None else self.verdict.conclusive,
            "reasons": [] if self.verdict is None else list(self.verdict.reasons),
            "note": self.note,
            "spectral_condition": {
                str(w): {
                    "target": condition_target(self.layer_type, self.shapes[w]),
                    "ratio": r,
                    "far": w in self.far_widths(),
                }
                for w, r in sorted(self.condition.items())
            },
        }


@dataclass
class SpectralReport:
    """Result of the cross-width spectral diagnostic (see :func:`cross_width_report`)."""

    widths: list[int]
    layers: dict[str, LayerRow]
    gate: tuple[str, ...]
    thresholds: Thresholds
    pooled: PowerLawFit | None
    overall: Verdict
    drifting: list[str]
    calibration: Calibration | None
    rule: str | None = None
    problems: list[str] = field(default_factory=list)
    # width -> [(step, {layer: sigma_max})], filled when proxies are trained
    history: dict[int, list[tuple[int, dict[str, float]]]] = field(default_factory=dict)
    val_loss: dict[int, float] = field(default_factory=dict)
    coord: Any = None  # a CoordReport when the coordinate check ran
    notes: list[str] = field(default_factory=list)
    # AdamW timescales tau = 1/(lr·wd) the runs covered at the slowest width (None: unknown,
    # e.g. checkpoints; inf: no weight decay), and how to cover enough of them
    timescales: float | None = None
    timescale_advice: str = ""
    min_timescales: float = MIN_TIMESCALES
    # gated layers whose spectrum looks like a random init (set for checkpoints)
    untrained: list[str] = field(default_factory=list)
    # per component (attention / mlp / output): pooled slope of sigma_max/sqrt(fan_out/fan_in)
    # and the calibrated wd exponent that makes it flat
    class_fits: dict[str, PowerLawFit] = field(default_factory=dict)
    class_calibrations: dict[str, Calibration] = field(default_factory=dict)
    # width -> {plan class: steps / tau}: AdamW timescales each run covered, per class
    timescales_by_width: dict[int, dict[str, float]] = field(default_factory=dict)

    def class_disagreements(self) -> list[tuple[str, str]]:
        """Pairs of components whose calibrated wd-exponent intervals do not overlap: one
        exponent for all of them cannot keep every class's sigma_max flat."""
        return disagreements(self.class_calibrations)

    def wd_exponents(self) -> dict[str, float]:
        """The per-component calibrated wd exponents that can be recommended (interval defined
        and at most 0.5 wide, :meth:`Calibration.too_wide`), rounded to 2 decimals, in the form
        ``ProxyConfig.wd_exponents`` takes (keys ``attention``, ``mlp``, ``output``; a class
        left out keeps the rule's exponent)."""
        return recommended_exponents(self.class_calibrations)

    def _class_dict(self, comp: str) -> dict[str, Any]:
        fit, cal = self.class_fits[comp], self.class_calibrations.get(comp)
        return {
            "fitted": "sigma_max / sqrt(fan_out / fan_in), pooled over the matrices",
            "alpha": fit.alpha,
            "alpha_ci": None if fit.ci is None else list(fit.ci),
            "matrices": [r.name for r in self.layers.values() if r.component == comp and r.fit is not None],
            "wd_exponent": None if cal is None else cal.exponent,
            "ci": None if cal is None or cal.ci is None else list(cal.ci),
            "trained_wd_exponent": None if cal is None else cal.trained_wd_exponent,
            "recommended": None if cal is None else cal.too_wide() is None,
            "not_recommended_because": None if cal is None else cal.too_wide(),
        }

    def far_from_condition(self) -> dict[int, list[str]]:
        """Width -> matrices far from the spectral condition there (information only)."""
        out: dict[int, list[str]] = {}
        for row in self.layers.values():
            for w in row.far_widths():
                out.setdefault(w, []).append(row.name)
        return dict(sorted(out.items()))

    def inconclusive_layers(self) -> list[str]:
        """Gated layers whose interval cannot tell invariant from drift."""
        return [r.name for r in self.gated() if r.verdict is not None and not r.verdict.conclusive]

    def all_untrained(self) -> bool:
        """Every gated layer looks like a random init: no training to judge."""
        return bool(self.gated()) and set(self.untrained) >= {r.name for r in self.gated()}

    def short_run(self) -> bool:
        """The runs covered fewer than ``min_timescales`` AdamW timescales."""
        t = self.timescales
        return t is not None and math.isfinite(t) and t < self.min_timescales

    @property
    def outcome(self) -> str:
        """``safe``, ``drift`` or ``inconclusive`` (see the module docstring)."""
        if not self.gated() or self.short_run() or self.all_untrained():
            return "inconclusive"
        if self.drifting:
            return "drift"
        return "inconclusive" if self.inconclusive_layers() else "safe"

    @property
    def safe(self) -> bool:
        """Every gated layer conclusively width-invariant on long enough runs (exit 0)."""
        return self.outcome == "safe"

    @property
    def exit_code(self) -> int:
        """0 safe, 1 drift, 3 inconclusive (2 is the CLI's bad input)."""
        return EXIT_CODES[self.outcome]

    def missing_evidence(self) -> list[str]:
        """Why the outcome is not conclusive, each with what would fix it (empty when it is)."""
        out: list[str] = []
        gate = "/".join(self.gate)
        if not self.gated():
            out.append(f"no {gate} matrix could be fitted: nothing to judge")
        if self.short_run():
            assert self.timescales is not None
            out.append(
                f"the runs cover {self.timescales:.2g} AdamW timescales tau = 1/(lr·wd) at the slowest "
                f"width, fewer than {self.min_timescales:g}: sigma_max is not at its steady state"
                + (f"; {self.timescale_advice}" if self.timescale_advice else "")
            )
        if self.all_untrained():
            out.append(
                f"every {gate} matrix looks untrained (its spectrum is that of a random init at every "
                "width): diagnose checkpoints trained for several AdamW timescales"
            )
        undecided = self.inconclusive_layers()
        if undecided and not self.drifting:
            row = self.layers[undecided[0]]
            why = row.verdict.reasons[0] if row.verdict is not None and row.verdict.reasons else ""
            more = " …" if len(undecided) > 3 else ""
            fix = (
                "add a third width"
                if len(self.widths) < 3
                else "add widths (each adds a degree of freedom) or train longer so sigma_max settles"
            )
            out.append(
                f"{len(undecided)} of {len(self.gated())} {gate} matrices are undecided "
                f"({', '.join(undecided[:3])}{more}; e.g. {why}): {fix}"
            )
        return out

    def drift_directions(self) -> str:
        """``"2 growing and 1 shrinking"``: how the drifting gated layers move ("" if none)."""
        ups = sum(
            1
            for name in self.drifting
            if (v := self.layers[name].verdict) is not None and v.verdict is Verdict.GROWING
        )
        downs = len(self.drifting) - ups
        return " and ".join(f"{k} {word}" for k, word in ((ups, "growing"), (downs, "shrinking")) if k)

    def gated(self) -> list[LayerRow]:
        return [r for r in self.layers.values() if r.param_class in self.gate and r.fit is not None]

    def summary(self) -> str:
        n = len(self.gated())
        gate = "/".join(self.gate)
        outcome = self.outcome
        if outcome == "safe":
            head = f"safe: all {n} {gate} matrices width-invariant"
        elif outcome == "drift":
            more = " …" if len(self.drifting) > 4 else ""
            how = self.drift_directions()
            names = ", ".join(self.drifting[:4]) + more
            head = f"drift: {len(self.drifting)} of {n} {gate} matrices ({how}: {names})"
        else:
            seen = f", {len(self.drifting)} drifting" if self.drifting else ""
            head = (
                f"inconclusive: {len(self.inconclusive_layers())} of {n} {gate} matrices "
                f"undecided{seen}; not enough evidence to call it safe"
            )
        if self.pooled is not None:
            head += f"; pooled {self.pooled.describe()}, ratio {self.pooled.ratio:.3g}"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": self.widths,
            "rule": self.rule,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "safe": self.safe,
            "overall": str(self.overall),
            "drifting": self.drifting,
            "inconclusive": self.inconclusive_layers(),
            "missing_evidence": self.missing_evidence(),
            "timescales": self.timescales,
            "untrained": self.untrained,
            "gate": list(self.gate),
            "thresholds": {
                "alpha_tol": self.thresholds.alpha_tol,
                "ratio_low": self.thresholds.ratio_low,
                "ratio_high": self.thresholds.ratio_high,
                "confidence": self.thresholds.confidence,
                "rule": self.thresholds.describe(),
            },
            "pooled": None
            if self.pooled is None
            else {
                "alpha": self.pooled.alpha,
                "alpha_ci": None if self.pooled.ci is None else list(self.pooled.ci),
                "ratio": self.pooled.ratio,
            },
            "calibration": None
            if self.calibration is None
            else {
                "wd_exponent": self.calibration.exponent,
                "ci": None if self.calibration.ci is None else list(self.calibration.ci),
                "trained_wd_exponent": self.calibration.trained_wd_exponent,
                "trained_lr_exponent": self.calibration.trained_lr_exponent,
                "presets": dict(self.calibration.presets),
                "nearest_preset": self.calibration.nearest_preset(),
                "recommended": self.calibration.too_wide() is None,
                "not_recommended_because": self.calibration.too_wide(),
                "weight_decay_convention": WD_CONVENTION,
            },
            "class_calibration": {c: self._class_dict(c) for c in self.class_fits},
            "class_disagreements": [list(p) for p in self.class_disagreements()],
            "wd_exponents": self.wd_exponents() or None,
            "timescales_by_width": {str(w): d for w, d in sorted(self.timescales_by_width.items())},
            "spectral_condition": {
                "far_factor": FAR_FACTOR,
                "far": {str(w): names for w, names in self.far_from_condition().items()},
            },
            "layers": [r.to_dict() for r in self.layers.values()],
            "val_loss": {str(w): v for w, v in self.val_loss.items()},
            "history": {str(w): [[s, d] for s, d in h] for w, h in self.history.items()},
            "problems": self.problems,
            "notes": self.notes,
            "coord": None if self.coord is None else self.coord.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def cross_width_report(
    spectra: Mapping[int, Mapping[str, _Spectrum]],
    *,
    thresholds: Thresholds | None = None,
    gate: Iterable[str] = ("hidden",),
    lr_exponent: float | None = None,
    wd_exponent: float | None = None,
    rule: str | None = None,
    problems: Iterable[str] = (),
    class_exponents: Mapping[str, TrainedExponents] | None = None,
) -> SpectralReport:
    """Match layers across widths, fit ``sigma_max ∝ width^alpha`` per layer, give verdicts.

    Args:
        spectra: ``{width: {layer name: spectrum}}`` (e.g. from
            :func:`~hptransfer.diagnostics.spectral.model_spectrum`), at least two widths.
        thresholds: verdict thresholds (defaults: ratio in [0.8, 1.25], |alpha| tolerance 0.1).
        gate: layer classes that decide the overall verdict (default: hidden matrices).
        lr_exponent / wd_exponent: the hidden-matrix lr and wd width exponents the proxies
            were trained with; when both are given, the wd exponent that makes sigma_max
            width-invariant is estimated (:func:`~hptransfer.diagnostics.fit.calibrate_wd_exponent`).
        rule: the rule's name, for the record.
        problems: messages gathered upstream (e.g. a width whose factory failed); kept.
        class_exponents: the exponents each component (``attention``, ``mlp``, ``output``;
            :mod:`~hptransfer.diagnostics.components`) was trained with; each component with a
            fitted matrix and known exponents gets its own pooled slope and calibrated wd
            exponent (:func:`~hptransfer.diagnostics.fit.calibrate_class`). Default, when
            ``lr_exponent`` and ``wd_exponent`` are given: those for attention and MLP (the
            readout's own exponents are not known then).

    Every matrix also gets its spectral-condition ratio at each width
    (:mod:`~hptransfer.diagnostics.condition`), information beside the fit.

    Layers missing at some widths, or whose type differs between widths, are reported in
    ``problems`` (by name and width); layers seen at two or more widths are still fitted.

    Raises:
        DiagnosticError: fewer than two widths, or no layer seen at two widths.
    """
    th = thresholds or Thresholds()
    gate = tuple(gate)
    probs = list(problems)
    widths = sorted(int(w) for w in spectra)
    if len(widths) < 2:
        got = f"width {widths[0]}" if widths else "no width"
        raise DiagnosticError(
            f"the spectral diagnostic compares widths: got {got}; give at least two, "
            "e.g. --widths 128,256,512"
        )
    names: list[str] = []
    for w in widths:
        names.extend(n for n in spectra[w] if n not in names)
    rows: dict[str, LayerRow] = {}
    for name in names:
        present = [w for w in widths if name in spectra[w]]
        missing = [w for w in widths if name not in spectra[w]]
        if missing:
            probs.append(
                f"layer {name!r} is missing at width(s) {', '.join(map(str, missing))} "
                f"(present at {', '.join(map(str, present))}): models of different widths "
                "should have the same layer names"
            )
        types = {spectra[w][name].layer_type for w in present}
        if len(types) > 1:
            probs.append(f"layer {name!r} changes type across widths ({', '.join(sorted(types))}); skipped")
            continue
        if len(present) < 2:
            continue
        first, last = spectra[present[0]][name], spectra[present[-1]][name]
        kind = next(iter(types))
        param_class = layer_class(
            _out_in(kind, first.shape), _out_in(kind, last.shape), embedding=is_embedding(name, kind)
        )
        condition = {}
        for w in present:
            cond = condition_row(name, kind, spectra[w][name].shape, spectra[w][name].sigma_max)
            if cond.ratio is not None:
                condition[w] = cond.ratio
        row = LayerRow(
            name=name,
            layer_type=kind,
            param_class=param_class,
            component=component(name, param_class),
            condition=condition,
            sigma={w: spectra[w][name].sigma_max for w in present},
            spectral_to_rms={w: spectra[w][name].spectral_to_rms for w in present},
            stable_rank={w: spectra[w][name].stable_rank for w in present},
            shapes={w: tuple(spectra[w][name].shape) for w in present},
        )
        vals = list(row.sigma.values())
        if any(not (v > 0 and math.isfinite(v)) for v in vals):
            row.note = "sigma_max is zero (e.g. a zero-initialised, untrained readout): no fit"
        else:
            row.fit = fit_power_law(present, vals, confidence=th.confidence)
            row.verdict = verdict(row.fit, th)
        rows[name] = row
    if not rows:
        raise DiagnosticError(
            "no weight matrix is present at two or more widths: the models share no layer names"
        )
    gated = [r for r in rows.values() if r.param_class in gate and r.fit is not None]
    if not gated:
        probs.append(
            f"no {'/'.join(gate)} matrix could be fitted (classes seen: "
            f"{', '.join(sorted({r.param_class for r in rows.values()}))}); nothing gates the verdict"
        )
    drifting = [r.name for r in gated if r.verdict is not None and r.verdict.verdict.drifts]
    ups = sum(1 for r in gated if r.verdict is not None and r.verdict.verdict is Verdict.GROWING)
    if not drifting:
        undecided = any(r.verdict is not None and not r.verdict.conclusive for r in gated)
        overall = Verdict.INCONCLUSIVE if undecided or not gated else Verdict.INVARIANT
    else:
        overall = Verdict.GROWING if 2 * ups >= len(drifting) else Verdict.SHRINKING
    pooled = None
    if gated:
        try:
            pooled = pooled_fit(
                {r.name: {float(w): v for w, v in r.sigma.items()} for r in gated},
                confidence=th.confidence,
            )
        except ValueError as exc:
            probs.append(f"pooled fit: {exc}")
    calibration = None
    notes: list[str] = []
    if pooled is not None and lr_exponent is not None and wd_exponent is not None:
        calibration = calibrate_wd_exponent(pooled, wd_exponent=wd_exponent, lr_exponent=lr_exponent)
        notes.append(
            f"the steady-state law sigma_max ≈ sqrt(lr/wd)·d^0.75 predicts alpha = "
            f"{law_alpha(lr_exponent, wd_exponent):+.2f} for this rule (lr ∝ d^{lr_exponent:g}, "
            f"wd ∝ d^{wd_exponent:g}); measured {pooled.alpha:+.2f}. It holds only after several "
            "AdamW timescales tau = 1/(lr·wd)"
        )
    if class_exponents is None and lr_exponent is not None and wd_exponent is not None:
        hidden = TrainedExponents(lr_exponent, wd_exponent)
        class_exponents = {"attention": hidden, "mlp": hidden}
    class_fits, class_cals = _class_calibration(rows, class_exponents or {}, th.confidence, probs)
    return SpectralReport(
        widths=widths,
        layers=rows,
        gate=gate,
        thresholds=th,
        pooled=pooled,
        overall=overall,
        drifting=drifting,
        calibration=calibration,
        rule=rule,
        problems=probs,
        notes=notes,
        class_fits=class_fits,
        class_calibrations=class_cals,
    )


def _class_calibration(
    rows: Mapping[str, LayerRow],
    exponents: Mapping[str, TrainedExponents],
    confidence: float,
    problems: list[str],
) -> tuple[dict[str, PowerLawFit], dict[str, Calibration]]:
    """One pooled slope per component (attention, mlp, output) over its fitted matrices, and
    its calibrated wd exponent when the component's trained exponents are known.

    The slope is that of ``sigma_max / sqrt(fan_out/fan_in)`` (the spectral condition's
    ratio), not of sigma_max itself: for hidden matrices the target is constant in width and
    the two are the same, but the readout's target shrinks as ``width^-1/2`` (fan-in grows),
    so a readout that follows the condition has a flat ratio and a shrinking sigma_max."""
    fits: dict[str, PowerLawFit] = {}
    cals: dict[str, Calibration] = {}
    for comp in COMPONENTS:
        members = {
            r.name: {float(w): v for w, v in r.condition.items()}
            for r in rows.values()
            if r.component == comp and r.fit is not None and len(r.condition) == len(r.sigma)
        }
        if not members:
            continue
        try:
            fits[comp] = pooled_fit(members, confidence=confidence)
        except ValueError as exc:
            problems.append(f"{comp} fit: {exc}")
            continue
        if comp in exponents:
            cals[comp] = calibrate_class(fits[comp], exponents[comp])
    return fits, cals


def looks_untrained(report: SpectralReport, slack: float = 1.15) -> list[str]:
    """Gated layers whose spectrum looks like a random init at every width: sigma_max / rms at
    most ``slack · (sqrt(m) + sqrt(n))``, the edge of an i.i.d. noise matrix (an orthogonal
    init sits below it). Training grows outlier singular values above that edge."""
    out = []
    for row in report.gated():
        edges = []
        for w, shape in row.shapes.items():
            m, n = _mat(shape)
            edges.append(row.spectral_to_rms[w] <= slack * (math.sqrt(m) + math.sqrt(n)))
        if edges and all(edges):
            out.append(row.name)
    return out


def _mat(shape: Sequence[int]) -> tuple[int, int]:
    return (shape[0], math.prod(shape[1:]))


def _out_in(layer_type: str, shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_out, fan_in)`` whatever the layout (HF Conv1D stores ``(in, out)``)."""
    fan_in, fan_out = fans(layer_type, shape)
    return (fan_out, fan_in)


def _condition_cell(row: LayerRow) -> str:
    """The spectral-condition ratio at the smallest and largest width (``a→b``), yellow when
    far from the target at either; ``-`` for embeddings."""
    if not row.condition:
        return "-"
    ws = sorted(row.condition)
    lo, hi = row.condition[ws[0]], row.condition[ws[-1]]
    text = f"{lo:.2g}" if len(ws) == 1 else f"{lo:.2g}→{hi:.2g}"
    return f"[yellow]{text}[/]" if row.far_widths() else text


def class_calibration_lines(report: SpectralReport) -> list[str]:
    """Text lines for the per-component calibration: each component's exponent and interval,
    and, when two components' intervals do not overlap, the exponents in the config's form."""
    cals = report.class_calibrations
    if not cals:
        return []
    parts = []
    for comp, cal in cals.items():
        band = "interval undefined" if cal.ci is None else f"[{cal.ci[0]:.2f}, {cal.ci[1]:.2f}]"
        n = sum(1 for r in report.layers.values() if r.component == comp and r.fit is not None)
        parts.append(f"{comp} {cal.exponent:.2f} {band} ({n} {'matrix' if n == 1 else 'matrices'})")
    lines = ["per-class calibrated wd exponent: " + "; ".join(parts) + " (muP lr ∝ 1/width)."]
    advice = split_advice(cals)
    if advice:
        lines.append(advice)
    return lines


def recommended_exponents(cals: Mapping[str, Calibration]) -> dict[str, float]:
    """``{class: exponent}`` (2 decimals) of the calibrations narrow enough to recommend."""
    return {c: round(cal.exponent, 2) for c, cal in cals.items() if cal.too_wide() is None}


def split_advice(cals: Mapping[str, Calibration]) -> str:
    """When two classes' intervals do not overlap: say so, and give the per-class exponents as
    the config takes them (the classes narrow enough to recommend; the others keep the rule's
    exponent). ``""`` when the classes agree."""
    split = disagreements(cals)
    if not split:
        return ""
    pairs = ", ".join(f"{a} and {b}" for a, b in split)
    text = f"{pairs}: the intervals do not overlap, so no single wd exponent keeps these classes flat"
    exps = recommended_exponents(cals)
    left = [c for c in cals if c not in exps]
    if not exps:
        return text + "; no class's interval is narrow enough (≤ 0.5) to recommend its own exponent"
    text += f"; use per-class exponents: {wd_exponents_text(exps)}"
    if left:
        text += f" ({', '.join(left)}: interval too wide to recommend, keeps the rule's exponent)"
    return text


def disagreements(cals: Mapping[str, Calibration]) -> list[tuple[str, str]]:
    """Pairs of components (in :data:`COMPONENTS` order) whose calibration intervals do not
    overlap; undefined intervals never count as a disagreement."""
    names = [c for c in COMPONENTS if c in cals]
    return [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if intervals_overlap(cals[a], cals[b]) is False
    ]


def wd_exponents_text(exponents: Mapping[str, float]) -> str:
    """Per-class exponents as the config takes them (TOML, under ``[rule]``)."""
    inner = ", ".join(f"{k} = {float(v)!r}" for k, v in exponents.items())
    return f"wd_exponents = {{{inner}}} under [rule] in the config"


def condition_line(report: SpectralReport) -> str:
    """One line on the spectral condition: what the column is and which matrices are far."""
    text = (
        "σ/√(out/in): sigma_max over the spectral-condition target sqrt(fan_out/fan_in) (Yang, Simon "
        "& Bernstein 2023), the matrix's RMS→RMS gain, at the smallest→largest width; "
        f"far = beyond ×{FAR_FACTOR:g} either way. Information only: one width cannot prove transfer"
    )
    far = report.far_from_condition()
    if not far:
        return text + "; no matrix is far."
    parts = []
    for w, names in far.items():
        more = " …" if len(names) > 2 else ""
        parts.append(f"{len(names)} at width {w} ({', '.join(names[:2])}{more})")
    return text + "; far: " + "; ".join(parts) + "."


def render(report: SpectralReport, *, max_rows: int = 60) -> Any:
    """A rich table of the report (imported lazily: rich is only needed for display)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    colours = {
        Verdict.INVARIANT: "green",
        Verdict.GROWING: "red",
        Verdict.SHRINKING: "red",
        Verdict.INCONCLUSIVE: "yellow",
    }
    table = Table(
        title=(
            f"spectral check · widths {', '.join(map(str, report.widths))}"
            + (f" · rule [bold]{report.rule}[/]" if report.rule else "")
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("layer", overflow="fold", ratio=3, min_width=12)
    table.add_column("class", style="dim", min_width=6)
    for w in report.widths:
        table.add_column(f"σmax@{w}", justify="right", min_width=6)
    table.add_column("ratio", justify="right", min_width=5)
    table.add_column("σ/√(out/in)", justify="right", min_width=7)
    table.add_column("alpha [CI]", justify="right", min_width=12, ratio=2)
    table.add_column("verdict", min_width=9, ratio=2)
    rows = list(report.layers.values())
    rows.sort(key=lambda r: (r.param_class not in report.gate, 0))
    for row in rows[:max_rows]:
        cls = row.param_class if row.component == "other" else f"{row.param_class}/{row.component}"
        cells = [row.name, cls]
        cells += [f"{row.sigma[w]:.3g}" if w in row.sigma else "-" for w in report.widths]
        cells.append("-" if row.ratio is None else f"{row.ratio:.3g}")
        cells.append(_condition_cell(row))
        if row.fit is None:
            cells += ["-", row.note or "-"]
        else:
            ci = row.fit.ci
            cells.append(f"{row.fit.alpha:+.2f}" + ("" if ci is None else f" [{ci[0]:+.2f},{ci[1]:+.2f}]"))
            assert row.verdict is not None
            v = row.verdict
            colour = colours[v.verdict] if row.param_class in report.gate else "dim"
            cells.append(f"[{colour}]{v}[/]")
        table.add_row(*cells)
    lines = [report.thresholds.describe() + f"; the verdict is gated on {'/'.join(report.gate)} matrices."]
    if len(rows) > max_rows:
        lines.append(f"({len(rows) - max_rows} more layers in --json / report.json)")
    if report.calibration is not None:
        lines.append("calibrated: " + report.calibration.describe() + f"; wd = {WD_CONVENTION}.")
    lines.extend(escape(line) for line in class_calibration_lines(report))
    lines.append(condition_line(report))
    lines.extend(report.notes)
    table.caption = "\n".join(lines)
    table.caption_justify = "left"
    return table
