"""Width power-law fits, verdicts and the weight-decay calibration (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hptransfer.diagnostics.fit import (
    Thresholds,
    Verdict,
    calibrate_two_rules,
    calibrate_wd_exponent,
    fit_power_law,
    law_alpha,
    pooled_fit,
    verdict,
)
from hptransfer.scaling import WD_EXPONENTS

WIDTHS = [64, 128, 256, 512, 1024]


@pytest.mark.parametrize("alpha", [-0.5, -0.25, 0.0, 0.3, 0.75, 1.0])
def test_exact_power_law_recovers_exponent(alpha: float) -> None:
    values = [3.0 * w**alpha for w in WIDTHS]
    fit = fit_power_law(WIDTHS, values)
    assert fit.alpha == pytest.approx(alpha, abs=1e-9)
    assert math.exp(fit.intercept) == pytest.approx(3.0, rel=1e-9)
    assert fit.ci is not None and fit.ci[1] - fit.ci[0] < 1e-6
    assert fit.ratio == pytest.approx(16.0**alpha)
    assert fit.predict(2048) == pytest.approx(3.0 * 2048**alpha)


def test_noisy_power_law_interval_covers_truth_at_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    alpha, hits, trials = 0.4, 0, 400
    widths = [32, 64, 128, 256]
    for _ in range(trials):
        values = [2.0 * w**alpha * math.exp(rng.normal(0, 0.1)) for w in widths]
        fit = fit_power_law(widths, values, confidence=0.9)
        assert fit.ci is not None
        hits += fit.ci[0] <= alpha <= fit.ci[1]
    # t interval: 90% coverage; binomial sd over 400 trials is 1.5%
    assert 0.85 <= hits / trials <= 0.95


def test_two_widths_give_undefined_interval() -> None:
    fit = fit_power_law([128, 512], [1.0, 2.0])
    assert fit.ci is None and fit.stderr is None
    assert fit.alpha == pytest.approx(0.5)
    assert "undefined" in fit.describe()
    assert fit.alpha_range() == (fit.alpha, fit.alpha)


@pytest.mark.parametrize(
    ("widths", "values", "match"),
    [
        ([128], [1.0], "at least 2"),
        ([128, 128], [1.0, 2.0], "distinct"),
        ([128, 256], [1.0, 0.0], "positive"),
        ([128, 256], [1.0, float("nan")], "finite"),
        ([128, -256], [1.0, 1.0], "widths"),
    ],
)
def test_bad_fit_input(widths: list[float], values: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_power_law(widths, values)


def test_verdict_invariant_growing_shrinking() -> None:
    flat = fit_power_law(WIDTHS, [1.0, 1.01, 0.99, 1.0, 1.02])
    assert verdict(flat).verdict is Verdict.INVARIANT
    assert verdict(flat).conclusive
    grow = fit_power_law(WIDTHS, [w**0.25 for w in WIDTHS])
    v = verdict(grow)
    assert v.verdict is Verdict.GROWING and v.verdict.drifts
    assert any("alpha > 0.1" in r for r in v.reasons)
    shrink = fit_power_law(WIDTHS, [w**-0.25 for w in WIDTHS])
    assert verdict(shrink).verdict is Verdict.SHRINKING


def test_verdict_slope_alone_flags_drift_within_ratio_band() -> None:
    # 2x span: alpha 0.3 gives ratio 1.23 (inside the band) but a slope clearly above 0.1
    widths = [128, 160, 200, 256]
    fit = fit_power_law(widths, [w**0.3 for w in widths])
    assert 0.8 <= fit.ratio <= 1.25
    assert verdict(fit).verdict is Verdict.GROWING
    # the same data with a looser slope tolerance passes
    assert verdict(fit, Thresholds(alpha_tol=0.35)).verdict is Verdict.INVARIANT


def test_verdict_noisy_flat_is_inconclusive_not_drift() -> None:
    fit = fit_power_law([128, 256, 512], [1.0, 1.15, 0.97])
    v = verdict(fit)
    assert v.verdict is Verdict.INCONCLUSIVE and not v.conclusive and not v.verdict.drifts
    assert str(v) == "inconclusive" and "too noisy" in v.reasons[0]


def test_verdict_ratio_alone_never_flags_drift() -> None:
    # ratio 1.3 > 1.25 but the slope interval straddles zero (the issue's [-2.22, +2.63] case)
    fit = fit_power_law([32, 64, 128], [1.0, 1.6, 1.3])
    assert fit.ratio > 1.25 and fit.ci is not None and fit.ci[0] < 0 < fit.ci[1]
    v = verdict(fit)
    assert v.verdict is Verdict.INCONCLUSIVE
    assert any("includes 0" in r for r in v.reasons)
    # ratio outside the band and an interval above zero (but reaching below +0.1): growing
    widths = [32, 48, 64, 96, 128]
    noisy = [w**0.17 * (1.0 + 0.03 * (-1) ** i) for i, w in enumerate(widths)]
    fit = fit_power_law(widths, noisy)
    assert fit.ratio > 1.25 and fit.ci is not None and 0 < fit.ci[0] < 0.1
    assert verdict(fit).verdict is Verdict.GROWING


def test_verdict_two_widths_is_never_conclusive() -> None:
    for values in ([1.0, 1.1], [1.0, 1.5], [1.0, 0.5]):
        v = verdict(fit_power_law([128, 1024], values))
        assert v.verdict is Verdict.INCONCLUSIVE and "add a width" in v.reasons[0]


def test_calibration_too_wide_is_not_recommended() -> None:
    widths = [32, 64, 128, 256]
    tight = calibrate_wd_exponent(fit_power_law(widths, [1.0, 1.01, 0.99, 1.0]), wd_exponent=1.0)
    assert tight.too_wide() is None and "nearest: linear" in tight.describe()
    noisy = calibrate_wd_exponent(fit_power_law(widths, [1.0, 1.6, 0.8, 1.3]), wd_exponent=1.0)
    why = noisy.too_wide()
    assert why is not None and "cannot tell the rules apart" in why
    assert "no recommendation" in noisy.describe() and "nearest" not in noisy.describe()
    two = calibrate_wd_exponent(fit_power_law([32, 64], [1.0, 1.0]), wd_exponent=1.0)
    assert "undefined" in (two.too_wide() or "")


def test_thresholds_validate() -> None:
    with pytest.raises(ValueError):
        Thresholds(ratio_low=1.2)
    with pytest.raises(ValueError):
        Thresholds(confidence=1.0)
    assert "[0.8, 1.25]" in Thresholds().describe()


@pytest.mark.parametrize(("lr_e", "wd_e"), [(-1.0, 1.0), (-1.0, 0.5), (-1.0, 0.0), (0.0, 0.0)])
def test_calibration_recovers_the_law_exponent(lr_e: float, wd_e: float) -> None:
    """Data generated by sigma = sqrt(lr/wd) d^0.75 under a rule: the calibration returns the
    wd exponent (for muP lr) that the law says makes sigma width-invariant: 0.5."""
    lr0, wd0, base = 0.01, 0.1, 128
    sig = []
    for w in WIDTHS:
        m = w / base
        sig.append(math.sqrt(lr0 * m**lr_e / (wd0 * m**wd_e)) * w**0.75)
    fit = fit_power_law(WIDTHS, sig)
    assert fit.alpha == pytest.approx(law_alpha(lr_e, wd_e))
    cal = calibrate_wd_exponent(fit, wd_exponent=wd_e, lr_exponent=lr_e)
    assert cal.exponent == pytest.approx(WD_EXPONENTS["sqrt"])
    assert cal.nearest_preset() == "sqrt"
    assert set(cal.presets) >= {"sqrt", "linear"}


def test_calibration_interval_is_twice_the_slope_interval() -> None:
    fit = fit_power_law([128, 256, 512, 1024], [1.0, 0.86, 0.70, 0.61])
    cal = calibrate_wd_exponent(fit, wd_exponent=1.0)
    assert fit.ci is not None and cal.ci is not None
    assert cal.exponent == pytest.approx(1.0 + 2 * fit.alpha)
    assert cal.ci[1] - cal.ci[0] == pytest.approx(2 * (fit.ci[1] - fit.ci[0]))
    assert "linear" in cal.describe() and "sqrt" in cal.describe()
    assert calibrate_wd_exponent(fit_power_law([1, 2], [1, 1]), wd_exponent=1.0).ci is None


def test_pooled_fit_uses_common_widths_and_averages_logs() -> None:
    series = {
        "a": {64: 1.0, 128: 2.0, 256: 4.0},
        "b": {64: 3.0, 128: 3.0, 256: 3.0, 512: 3.0},
    }
    fit = pooled_fit(series)
    assert fit.widths == (64.0, 128.0, 256.0)
    assert fit.alpha == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fewer than 2"):
        pooled_fit({"a": {64: 1.0, 128: 1.0}, "b": {256: 1.0, 512: 1.0}})


def test_two_rule_calibration_interpolates_without_the_law() -> None:
    # the slope reacts to wd twice as strongly as the law says: alpha(e) = 0.8 - 1.0 * e
    widths = [32, 64, 128, 256]
    rng = np.random.default_rng(1)

    def run(e: float) -> list[float]:
        return [w ** (0.8 - e) * math.exp(rng.normal(0, 0.02)) for w in widths]

    fa, fb = fit_power_law(widths, run(0.5)), fit_power_law(widths, run(1.0))
    cal = calibrate_two_rules(fa, 0.5, fb, 1.0)
    assert cal.exponent == pytest.approx(0.8, abs=0.05)
    assert cal.ci is not None and cal.ci[0] < 0.8 < cal.ci[1]
    # the one-run law-based mapping would miss it (it assumes -1/2 per unit of e)
    assert abs(calibrate_wd_exponent(fa, wd_exponent=0.5).exponent - 0.8) > 0.1
    with pytest.raises(ValueError, match="different"):
        calibrate_two_rules(fa, 0.5, fb, 0.5)
