"""Width power laws, verdicts and the weight-decay calibration (pure numpy, no torch).

A layer's top singular value ``sigma_max`` measured on proxies of widths ``d_1 < ... < d_n`` is
fitted as ``log sigma = a + alpha * log d`` (least squares) with a Student-t confidence
interval on ``alpha`` (``n - 2`` degrees of freedom, so with two widths the interval is
undefined and only the point estimate is reported).

Verdict thresholds (:class:`Thresholds`, defaults): a layer drifts only when the data support
it, never on the ratio alone:

* *growing* when the lower end of the 95% interval of ``alpha`` exceeds ``alpha_tol = 0.1``, or
  when the observed ratio ``sigma(d_n) / sigma(d_1)`` exceeds ``1.25`` and the interval lies
  above zero; *shrinking* symmetrically (upper end below ``-0.1``, or ratio below ``0.8``
  with the interval below zero);
* *width-invariant* when the whole interval lies within ``±alpha_tol`` and the ratio within
  ``[0.8, 1.25]``;
* *inconclusive* otherwise: the interval is too wide to tell (noisy sigma_max, too few widths;
  with two widths it is undefined, so two widths never give a conclusive verdict).

Calibration: Fan et al. (arXiv 2510.15262) find that at the AdamW steady state
``sigma_max ≈ sqrt(lr / wd) * d**0.75`` (torch AdamW convention: the step decays ``p`` by
``lr * wd * p``). Proxies trained with ``lr ∝ d**a0`` and ``wd ∝ d**e0`` and observed
``sigma_max ∝ d**alpha`` therefore become width-invariant with ``wd ∝ d**e*`` where
``e* = e0 + 2 * alpha`` (and, moving to muP's ``lr ∝ 1/d`` from ``a0``,
``e* = e0 + 2 * alpha - (1 + a0)``): changing an exponent by ``Δ`` moves ``alpha`` by ``-Δ/2``
(wd) or ``+Δ/2`` (lr).

Example:
    >>> import numpy as np
    >>> fit = fit_power_law([128, 256, 512], [2.0 * w**0.25 for w in (128, 256, 512)])
    >>> round(fit.alpha, 6)
    0.25
    >>> round(calibrate_wd_exponent(fit, wd_exponent=1.0).exponent, 6)
    1.5
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
from scipy import stats

from hptransfer.scaling import WD_EXPONENTS

__all__ = [
    "LAW_EXPONENT",
    "MAX_CALIBRATION_WIDTH",
    "Calibration",
    "LayerVerdict",
    "PowerLawFit",
    "Thresholds",
    "TrainedExponents",
    "Verdict",
    "calibrate_class",
    "calibrate_two_rules",
    "calibrate_wd_exponent",
    "fit_power_law",
    "intervals_overlap",
    "law_alpha",
    "pooled_fit",
    "verdict",
]

#: Widest calibration interval that still yields a recommended wd exponent (sqrt to linear).
MAX_CALIBRATION_WIDTH = 0.5

#: Steady-state law exponent of sigma_max in width (Fan et al., arXiv 2510.15262).
LAW_EXPONENT = 0.75


class Verdict(str, Enum):
    """How a layer's sigma_max behaves with width."""

    INVARIANT = "width-invariant"
    GROWING = "growing"
    SHRINKING = "shrinking"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value

    @property
    def drifts(self) -> bool:
        return self in (Verdict.GROWING, Verdict.SHRINKING)


@dataclass(frozen=True)
class Thresholds:
    """When a layer counts as width-invariant (see the module docstring)."""

    alpha_tol: float = 0.1
    ratio_low: float = 0.8
    ratio_high: float = 1.25
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not self.alpha_tol >= 0:
            raise ValueError(f"alpha_tol must be >= 0, got {self.alpha_tol}")
        if not 0 < self.ratio_low <= 1 <= self.ratio_high:
            raise ValueError(
                f"need 0 < ratio_low <= 1 <= ratio_high, got [{self.ratio_low}, {self.ratio_high}]"
            )
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    def describe(self) -> str:
        return (
            f"width-invariant when the {self.confidence:.0%} interval of the slope alpha lies within "
            f"±{self.alpha_tol:g} and sigma(largest)/sigma(smallest) in [{self.ratio_low:g}, "
            f"{self.ratio_high:g}]; drift only when the interval supports it"
        )


@dataclass(frozen=True)
class PowerLawFit:
    """``log value = intercept + alpha * log width`` fitted by least squares."""

    widths: tuple[float, ...]
    values: tuple[float, ...]
    alpha: float
    intercept: float
    stderr: float | None  # None with two widths (no residual degrees of freedom)
    ci: tuple[float, float] | None  # None when undefined (two widths)
    confidence: float
    r2: float | None

    @property
    def n(self) -> int:
        return len(self.widths)

    @property
    def ratio(self) -> float:
        """Observed value at the largest width over the value at the smallest width."""
        i_lo = int(np.argmin(self.widths))
        i_hi = int(np.argmax(self.widths))
        return self.values[i_hi] / self.values[i_lo]

    @property
    def span(self) -> float:
        """Largest over smallest width."""
        return max(self.widths) / min(self.widths)

    def predict(self, width: float) -> float:
        return math.exp(self.intercept + self.alpha * math.log(width))

    def alpha_range(self) -> tuple[float, float]:
        """The confidence interval, or the point estimate twice when it is undefined."""
        return self.ci if self.ci is not None else (self.alpha, self.alpha)

    def describe(self) -> str:
        if self.ci is None:
            return f"alpha = {self.alpha:+.3f} (interval undefined with {self.n} widths)"
        lo, hi = self.ci
        return f"alpha = {self.alpha:+.3f} [{lo:+.3f}, {hi:+.3f}] ({self.confidence:.0%})"


def _check_positive(widths: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(widths, dtype=float)
    v = np.asarray(values, dtype=float)
    if w.ndim != 1 or w.shape != v.shape:
        raise ValueError(f"widths and values must be 1-D of equal length, got {w.shape} and {v.shape}")
    if len(w) < 2:
        raise ValueError(f"a width power law needs at least 2 widths, got {len(w)}")
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError(f"widths must be positive and finite, got {list(widths)}")
    if len(set(w.tolist())) < 2:
        raise ValueError(f"need at least 2 distinct widths, got {list(widths)}")
    if not (np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError(f"values must be positive and finite to take logs, got {list(values)}")
    return w, v


def fit_power_law(
    widths: Sequence[float], values: Sequence[float], *, confidence: float = 0.95
) -> PowerLawFit:
    """Fit ``values ≈ exp(a) * widths**alpha`` by least squares in log-log space.

    The interval on ``alpha`` uses the t distribution with ``n - 2`` degrees of freedom; with
    exactly two (distinct) widths it is undefined (``ci is None``). A perfect fit with three or
    more widths gives a zero-width interval.

    Raises:
        ValueError: fewer than two distinct widths, or a non-positive / non-finite value.

    Example:
        >>> round(fit_power_law([64, 128, 256], [1.0, 2.0, 4.0]).alpha, 9)
        1.0
    """
    w, v = _check_positive(widths, values)
    x, y = np.log(w), np.log(v)
    n = len(x)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    alpha = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - alpha * xm)
    resid = y - (intercept + alpha * x)
    ss_res = float((resid**2).sum())
    ss_tot = float(((y - ym) ** 2).sum())
    if n > 2:
        s2 = ss_res / (n - 2)
        stderr = math.sqrt(s2 / sxx)
        q = float(stats.t.ppf(0.5 + confidence / 2, n - 2))
        ci: tuple[float, float] | None = (alpha - q * stderr, alpha + q * stderr)
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    else:
        stderr, ci, r2 = None, None, None
    return PowerLawFit(
        widths=tuple(float(a) for a in w),
        values=tuple(float(a) for a in v),
        alpha=alpha,
        intercept=intercept,
        stderr=stderr,
        ci=ci,
        confidence=confidence,
        r2=r2,
    )


def pooled_fit(series: Mapping[str, Mapping[float, float]], *, confidence: float = 0.95) -> PowerLawFit:
    """One slope for many layers: fit the mean over layers of ``log value`` at each width.

    Only widths present for every layer are used. Layers of one model share their widths, so
    their errors are not independent: the interval comes from the widths (``n - 2`` degrees of
    freedom), not from the number of layers.

    Raises:
        ValueError: no layers, or fewer than two widths common to all layers.
    """
    if not series:
        raise ValueError("pooled_fit needs at least one layer")
    common = set.intersection(*(set(s) for s in series.values()))
    widths = sorted(common)
    if len(widths) < 2:
        raise ValueError("the layers share fewer than 2 widths; cannot fit a common slope")
    logs = np.array([[math.log(s[w]) for w in widths] for s in series.values()])
    if not np.all(np.isfinite(logs)):
        raise ValueError("values must be positive and finite to take logs")
    return fit_power_law(widths, np.exp(logs.mean(axis=0)).tolist(), confidence=confidence)


@dataclass(frozen=True)
class LayerVerdict:
    """The verdict of one fit, with the reasons spelled out."""

    verdict: Verdict
    reasons: tuple[str, ...] = field(default=())

    @property
    def conclusive(self) -> bool:
        return self.verdict is not Verdict.INCONCLUSIVE

    def __str__(self) -> str:
        return str(self.verdict)


def verdict(fit: PowerLawFit, thresholds: Thresholds | None = None) -> LayerVerdict:
    """Width-invariant, growing, shrinking or inconclusive, by the rules of :class:`Thresholds`.

    Example:
        >>> verdict(fit_power_law([64, 128, 256, 512], [1, 2, 4, 8])).verdict
        <Verdict.GROWING: 'growing'>
        >>> verdict(fit_power_law([64, 128], [1, 2])).verdict   # two widths: no interval
        <Verdict.INCONCLUSIVE: 'inconclusive'>
    """
    t = thresholds or Thresholds()
    ratio = fit.ratio
    if fit.ci is None:
        return LayerVerdict(
            Verdict.INCONCLUSIVE,
            (
                f"{fit.n} widths leave no degrees of freedom for an interval on alpha "
                f"(point estimate {fit.alpha:+.3f}, ratio {ratio:.3g}); add a width",
            ),
        )
    lo, hi = fit.ci
    band = f"[{lo:+.3f}, {hi:+.3f}]"
    if lo > t.alpha_tol:
        return LayerVerdict(Verdict.GROWING, (f"alpha > {t.alpha_tol:g} ({fit.describe()})",))
    if hi < -t.alpha_tol:
        return LayerVerdict(Verdict.SHRINKING, (f"alpha < {-t.alpha_tol:g} ({fit.describe()})",))
    if ratio > t.ratio_high and lo > 0:
        return LayerVerdict(Verdict.GROWING, (f"ratio {ratio:.3g} > {t.ratio_high:g}, alpha {band} > 0",))
    if ratio < t.ratio_low and hi < 0:
        return LayerVerdict(Verdict.SHRINKING, (f"ratio {ratio:.3g} < {t.ratio_low:g}, alpha {band} < 0",))
    reasons: list[str] = []
    if not (-t.alpha_tol <= lo and hi <= t.alpha_tol):
        reasons.append(
            f"alpha interval {band} reaches beyond ±{t.alpha_tol:g} without excluding it: "
            "too noisy or too few widths to tell"
        )
    if not t.ratio_low <= ratio <= t.ratio_high:
        reasons.append(
            f"ratio {ratio:.3g} outside [{t.ratio_low:g}, {t.ratio_high:g}] but alpha {band} includes 0"
        )
    if reasons:
        return LayerVerdict(Verdict.INCONCLUSIVE, tuple(reasons))
    return LayerVerdict(Verdict.INVARIANT)


@dataclass(frozen=True)
class Calibration:
    """The weight-decay width exponent that makes sigma_max width-invariant."""

    exponent: float
    ci: tuple[float, float] | None
    alpha: float
    trained_wd_exponent: float
    trained_lr_exponent: float
    presets: Mapping[str, float]

    def nearest_preset(self) -> str:
        """The preset (``linear``, ``sqrt``, ``constant``) closest to the estimate."""
        return min(self.presets, key=lambda k: abs(self.presets[k] - self.exponent))

    def too_wide(self, max_width: float = MAX_CALIBRATION_WIDTH) -> str | None:
        """Why the estimate cannot be recommended (None when it can): an undefined interval,
        or one wider than ``max_width`` (default: the 0.5 between the ``sqrt`` and ``linear``
        presets, so the data could not tell those two apart)."""
        if not math.isfinite(self.exponent):
            return "the estimate is not finite"
        if self.ci is None:
            return "its interval is undefined (two widths leave no degrees of freedom)"
        lo, hi = self.ci
        if hi - lo > max_width:
            return (
                f"its {hi - lo:.2f}-wide interval [{lo:.2f}, {hi:.2f}] is wider than {max_width:g} "
                "(the gap between the sqrt and linear rules): the data cannot tell the rules apart"
            )
        return None

    def describe(self) -> str:
        band = (
            "interval undefined with 2 widths"
            if self.ci is None
            else f"{self.ci[0]:+.2f} to {self.ci[1]:+.2f}"
        )
        presets = ", ".join(f"{k} = {v:g}" for k, v in self.presets.items())
        text = f"wd ∝ width^{self.exponent:.2f} ({band}) under muP lr ∝ 1/width; presets: {presets}; "
        why = self.too_wide()
        if why is not None:
            return text + f"no recommendation: {why}"
        return text + f"nearest: {self.nearest_preset()}"


def calibrate_wd_exponent(
    fit: PowerLawFit,
    *,
    wd_exponent: float,
    lr_exponent: float = -1.0,
    target_lr_exponent: float = -1.0,
) -> Calibration:
    """The wd width exponent that makes sigma_max width-invariant, from a fit under a known rule.

    Under ``sigma_max ∝ sqrt(lr / wd) * d**0.75`` the slope moves by ``-Δ/2`` when the wd
    exponent moves by ``Δ`` and by ``+Δ/2`` when the lr exponent does, so

        ``e* = wd_exponent + 2 * alpha + (target_lr_exponent - lr_exponent)``.

    Args:
        fit: the slope of sigma_max with width (one layer or :func:`pooled_fit`).
        wd_exponent: the wd exponent the proxies were trained with (0 for constant wd).
        lr_exponent: their lr exponent (muP hidden matrices: -1; SP: 0).
        target_lr_exponent: the lr exponent the recommendation is for (muP: -1).

    Example:
        >>> fit = fit_power_law([128, 256, 512], [4.0, 4.0, 4.0])
        >>> round(calibrate_wd_exponent(fit, wd_exponent=0.5).exponent, 9)
        0.5
    """
    shift = wd_exponent + (target_lr_exponent - lr_exponent)
    exponent = shift + 2.0 * fit.alpha
    ci = None if fit.ci is None else (shift + 2.0 * fit.ci[0], shift + 2.0 * fit.ci[1])
    return Calibration(
        exponent=exponent,
        ci=ci,
        alpha=fit.alpha,
        trained_wd_exponent=wd_exponent,
        trained_lr_exponent=lr_exponent,
        presets=dict(WD_EXPONENTS),
    )


def law_alpha(lr_exponent: float, wd_exponent: float) -> float:
    """The slope the steady-state law predicts: ``(lr_exponent - wd_exponent)/2 + 0.75``.

    Example:
        >>> law_alpha(-1.0, 0.5)   # muP + wd ∝ sqrt(width)
        0.0
    """
    return (lr_exponent - wd_exponent) / 2.0 + LAW_EXPONENT


def calibrate_two_rules(
    fit_a: PowerLawFit, wd_exponent_a: float, fit_b: PowerLawFit, wd_exponent_b: float
) -> Calibration:
    """The wd exponent with zero slope, interpolated between proxies trained under two wd
    exponents (same lr rule): no assumption on how strongly sigma_max reacts to wd.

    With slopes ``alpha_a``, ``alpha_b`` at exponents ``e_a != e_b``, the slope is taken as
    linear in ``e`` and ``e* = e_a - alpha_a (e_b - e_a) / (alpha_b - alpha_a)``. The interval
    propagates both slopes' standard errors (delta method, ``min(n) - 2`` degrees of freedom);
    undefined when either fit has only two widths. Under the steady-state law the slope moves
    by ``-Δe/2``; the measured sensitivity ``(alpha_b - alpha_a)/(e_b - e_a)`` shows whether
    it does.

    Raises:
        ValueError: equal exponents or equal slopes (no crossing).

    Example:
        >>> w = [64, 128, 256]
        >>> fa = fit_power_law(w, [x**0.25 for x in w]); fb = fit_power_law(w, [x**-0.25 for x in w])
        >>> round(calibrate_two_rules(fa, 0.0, fb, 1.0).exponent, 6)
        0.5
    """
    de = wd_exponent_b - wd_exponent_a
    da = fit_b.alpha - fit_a.alpha
    if de == 0:
        raise ValueError("the two runs need different wd exponents")
    if da == 0:
        raise ValueError("the two runs have the same slope; the slope does not react to wd here")
    exponent = wd_exponent_a - fit_a.alpha * de / da
    ci = None
    if fit_a.stderr is not None and fit_b.stderr is not None:
        d_a = -de * fit_b.alpha / da**2
        d_b = de * fit_a.alpha / da**2
        se = math.sqrt((d_a * fit_a.stderr) ** 2 + (d_b * fit_b.stderr) ** 2)
        dof = min(fit_a.n, fit_b.n) - 2
        q = float(stats.t.ppf(0.5 + fit_a.confidence / 2, dof))
        ci = (exponent - q * se, exponent + q * se)
    return Calibration(
        exponent=exponent,
        ci=ci,
        alpha=0.0,
        trained_wd_exponent=wd_exponent_a,
        trained_lr_exponent=float("nan"),
        presets=dict(WD_EXPONENTS),
    )


@dataclass(frozen=True)
class TrainedExponents:
    """Width exponents a class of matrices was trained with: ``lr ∝ m**lr``, ``wd ∝ m**wd``
    and a forward multiplier ``m**multiplier`` (the mup-style readout's ``1/m``: -1)."""

    lr: float
    wd: float
    multiplier: float = 0.0


def calibrate_class(fit: PowerLawFit, trained: TrainedExponents) -> Calibration:
    """The wd exponent, in the config's muP form, that makes one class's sigma_max flat.

    The fitted matrix is the stored weight ``W``; the network uses ``m**multiplier · W``, which
    trains like a weight with lr exponent ``lr + multiplier`` and wd exponent
    ``wd - multiplier`` (Adam's step is scale-free, and AdamW's per-step decay ``lr·wd`` is
    kept). The calibration is made on that effective weight, slope ``alpha + multiplier``,
    for muP's ``lr ∝ 1/m``: so a mup-style readout (lr exponent 0, wd ``e - 1``, multiplier
    -1) and an lr-style one (lr -1, wd ``e``) both give the ``e`` a config takes. With no
    multiplier it is :func:`calibrate_wd_exponent` with ``target_lr_exponent = -1``.

    Example:
        >>> fit = fit_power_law([64, 128, 256], [w**0.25 for w in (64, 128, 256)])
        >>> round(calibrate_class(fit, TrainedExponents(-1.0, 1.0)).exponent, 6)
        1.5
        >>> round(calibrate_class(fit, TrainedExponents(0.0, 0.0, multiplier=-1.0)).exponent, 6)
        -0.5
    """
    shift = trained.multiplier
    effective = replace(
        fit,
        alpha=fit.alpha + shift,
        ci=None if fit.ci is None else (fit.ci[0] + shift, fit.ci[1] + shift),
    )
    return calibrate_wd_exponent(
        effective,
        wd_exponent=trained.wd - shift,
        lr_exponent=trained.lr + shift,
        target_lr_exponent=-1.0,
    )


def intervals_overlap(a: Calibration, b: Calibration) -> bool | None:
    """Whether two calibrations' intervals overlap (None when either is undefined).

    Example:
        >>> c = lambda lo, hi: Calibration((lo + hi) / 2, (lo, hi), 0.0, 1.0, -1.0, {})
        >>> intervals_overlap(c(0.4, 0.6), c(0.55, 0.9)), intervals_overlap(c(0.4, 0.6), c(0.7, 0.9))
        (True, False)
    """
    if a.ci is None or b.ci is None:
        return None
    return a.ci[0] <= b.ci[1] and b.ci[0] <= a.ci[1]
