"""Cross-width report: layer matching, classes, verdicts, calibration, bad input."""

from __future__ import annotations

import json

import pytest

from hptransfer.diagnostics.fit import Verdict
from hptransfer.diagnostics.report import DiagnosticError, cross_width_report, layer_class, render
from hptransfer.diagnostics.spectral import LayerSpectrum

WIDTHS = [64, 128, 256, 512]


def _spec(name: str, shape: tuple[int, ...], sigma: float, kind: str = "Linear") -> LayerSpectrum:
    return LayerSpectrum(
        name=name, layer_type=kind, shape=shape, sigma=(sigma,), fro=2 * sigma, error_bound=0.0
    )


def _model(w: int, hidden_alpha: float = 0.0, out_alpha: float = 0.5) -> dict[str, LayerSpectrum]:
    return {
        "embed.weight": _spec("embed.weight", (100, w), 3.0 * (w / 64) ** 0.5, "Embedding"),
        "blocks.0.fc.weight": _spec("blocks.0.fc.weight", (4 * w, w), 2.0 * (w / 64) ** hidden_alpha),
        "blocks.0.proj.weight": _spec("blocks.0.proj.weight", (w, 4 * w), 1.5 * (w / 64) ** hidden_alpha),
        "head.weight": _spec("head.weight", (100, w), 1.0 * (w / 64) ** out_alpha),
    }


def test_layer_classes_from_shapes() -> None:
    assert layer_class((64, 64), (128, 128)) == "hidden"
    assert layer_class((10, 64), (10, 128)) == "output"
    assert layer_class((64, 16), (128, 16)) == "input"
    assert layer_class((10, 16), (10, 16)) == "fixed"
    assert layer_class((64, 64, 3, 3), (128, 128, 3, 3)) == "hidden"
    assert layer_class((100, 64), (100, 128), embedding=True) == "input"


def test_invariant_hidden_layers_are_safe_even_if_readout_grows() -> None:
    rep = cross_width_report({w: _model(w) for w in WIDTHS})
    assert rep.safe and rep.exit_code == 0 and rep.overall is Verdict.INVARIANT
    assert rep.layers["blocks.0.fc.weight"].param_class == "hidden"
    assert rep.layers["head.weight"].param_class == "output"
    assert rep.layers["embed.weight"].param_class == "input"  # (vocab, width) table: width is fan-out
    # the readout grows but is not gated by default
    assert rep.layers["head.weight"].verdict.verdict is Verdict.GROWING
    gated = cross_width_report({w: _model(w) for w in WIDTHS}, gate=("hidden", "output"))
    assert not gated.safe and "head.weight" in gated.drifting


@pytest.mark.parametrize(("alpha", "overall"), [(0.25, Verdict.GROWING), (-0.25, Verdict.SHRINKING)])
def test_drift_is_flagged_with_direction(alpha: float, overall: Verdict) -> None:
    rep = cross_width_report({w: _model(w, hidden_alpha=alpha) for w in WIDTHS})
    assert not rep.safe and rep.exit_code == 1
    assert rep.overall is overall
    assert sorted(rep.drifting) == ["blocks.0.fc.weight", "blocks.0.proj.weight"]
    assert rep.pooled is not None and rep.pooled.alpha == pytest.approx(alpha)
    assert "drift" in rep.summary()


def test_calibration_from_pooled_fit() -> None:
    # trained with muP lr (-1) and linear wd (1): sigma shrinks as d^-0.25 -> e* = 0.5 (sqrt)
    rep = cross_width_report(
        {w: _model(w, hidden_alpha=-0.25) for w in WIDTHS},
        lr_exponent=-1.0,
        wd_exponent=1.0,
        rule="mup-wd-linear",
    )
    assert rep.calibration is not None
    assert rep.calibration.exponent == pytest.approx(0.5)
    assert rep.calibration.nearest_preset() == "sqrt"
    assert any("predicts alpha = -0.25" in n for n in rep.notes)
    data = json.loads(rep.to_json())
    assert data["calibration"]["wd_exponent"] == pytest.approx(0.5)
    assert data["calibration"]["nearest_preset"] == "sqrt"
    assert data["safe"] is False and len(data["layers"]) == 4
    # no rule known -> no calibration
    assert cross_width_report({w: _model(w) for w in WIDTHS}).calibration is None


def test_unmatched_layers_are_named_and_partial_results_kept() -> None:
    spectra = {w: _model(w) for w in WIDTHS}
    del spectra[256]["blocks.0.proj.weight"]
    spectra[512]["extra.weight"] = _spec("extra.weight", (512, 512), 1.0)
    spectra[128]["head.weight"] = _spec("head.weight", (100, 128), 1.0, kind="Conv1d")
    rep = cross_width_report(spectra)
    text = "\n".join(rep.problems)
    assert "'blocks.0.proj.weight' is missing at width(s) 256" in text
    assert "'extra.weight' is missing at width(s) 64, 128, 256" in text
    assert "'head.weight' changes type" in text
    # the layer missing at one width is still fitted on the other three
    assert rep.layers["blocks.0.proj.weight"].fit is not None
    assert rep.layers["blocks.0.proj.weight"].fit.n == 3
    assert "extra.weight" not in rep.layers and "head.weight" not in rep.layers


def test_single_width_and_nothing_matched_are_errors() -> None:
    with pytest.raises(DiagnosticError, match="at least two"):
        cross_width_report({128: _model(128)})
    with pytest.raises(DiagnosticError, match="share no layer"):
        cross_width_report({64: {"a": _spec("a", (64, 64), 1.0)}, 128: {"b": _spec("b", (128, 128), 1.0)}})


def test_zero_sigma_layer_is_noted_not_fitted() -> None:
    spectra = {w: _model(w) for w in WIDTHS}
    spectra[64]["head.weight"] = _spec("head.weight", (100, 64), 0.0)
    rep = cross_width_report(spectra)
    assert rep.layers["head.weight"].fit is None and "zero" in rep.layers["head.weight"].note
    assert rep.safe


def test_render_has_every_width_and_the_thresholds() -> None:
    from rich.console import Console

    rep = cross_width_report(
        {w: _model(w, hidden_alpha=0.3) for w in WIDTHS}, lr_exponent=-1.0, wd_exponent=0.0, rule="mup"
    )
    console = Console(width=200, record=True)
    console.print(render(rep))
    out = console.export_text()
    for w in WIDTHS:
        assert f"σmax@{w}" in out
    assert "growing" in out and "[0.8, 1.25]" in out and "calibrated" in out


def _noisy(w: int, wobble: float) -> dict[str, LayerSpectrum]:
    """Hidden sigma_max flat in width up to a +-wobble zig-zag (noise the interval must see)."""
    sign = 1 if WIDTHS.index(w) % 2 else -1
    return _model(w, hidden_alpha=0.0) | {
        "blocks.0.fc.weight": _spec("blocks.0.fc.weight", (4 * w, w), 2.0 * (1 + sign * wobble)),
    }


def test_outcomes_and_exit_codes_safe_drift_inconclusive() -> None:
    safe = cross_width_report({w: _model(w) for w in WIDTHS})
    assert (safe.outcome, safe.exit_code, safe.missing_evidence()) == ("safe", 0, [])
    noisy = cross_width_report({w: _noisy(w, 0.2) for w in WIDTHS})
    assert noisy.outcome == "inconclusive" and noisy.exit_code == 3 and not noisy.safe
    assert noisy.inconclusive_layers() == ["blocks.0.fc.weight"]
    assert noisy.overall is Verdict.INCONCLUSIVE
    (why,) = noisy.missing_evidence()
    assert "1 of 2 hidden matrices are undecided (blocks.0.fc.weight" in why and "add widths" in why
    assert noisy.summary().startswith("inconclusive: 1 of 2 hidden matrices undecided")
    data = json.loads(noisy.to_json())
    assert data["outcome"] == "inconclusive" and data["exit_code"] == 3
    assert data["inconclusive"] == ["blocks.0.fc.weight"] and data["missing_evidence"] == [why]
    # drift in one layer decides even when another is undecided
    drift = cross_width_report(
        {
            w: _noisy(w, 0.2) | {"blocks.0.proj.weight": _spec("blocks.0.proj.weight", (w, 4 * w), w / 64)}
            for w in WIDTHS
        }
    )
    assert drift.outcome == "drift" and drift.exit_code == 1 and drift.drifting == ["blocks.0.proj.weight"]


def test_two_widths_and_short_runs_are_inconclusive() -> None:
    two = cross_width_report({w: _model(w) for w in WIDTHS[:2]})
    assert two.outcome == "inconclusive" and "add a third width" in two.missing_evidence()[0]
    short = cross_width_report({w: _model(w, hidden_alpha=0.25) for w in WIDTHS})
    short.timescales, short.timescale_advice = 0.5, "train ≥ 1920 steps (--steps)"
    assert short.drifting and short.outcome == "inconclusive" and short.exit_code == 3
    assert "cover 0.5 AdamW timescales" in short.missing_evidence()[0]
    assert "train ≥ 1920 steps" in short.missing_evidence()[0]
    short.timescales = 3.0  # long enough: the drift counts
    assert short.outcome == "drift"
    short.timescales = float("inf")  # no weight decay: no steady state to wait for
    assert short.outcome == "drift"


def test_untrained_spectra_are_recognised() -> None:
    import math

    from hptransfer.diagnostics.report import looks_untrained

    def noise_like(w: int) -> dict[str, LayerSpectrum]:
        m, n = 4 * w, w
        edge = math.sqrt(m) + math.sqrt(n)  # sigma_max / rms of an i.i.d. matrix
        rms = 0.02
        fro = rms * math.sqrt(m * n)
        spec = LayerSpectrum("fc.weight", "Linear", (m, n), (rms * edge,), fro, 0.0)
        trained = LayerSpectrum("proj.weight", "Linear", (n, m), (rms * edge * 3,), fro, 0.0)
        return {"fc.weight": spec, "proj.weight": trained}

    rep = cross_width_report({w: noise_like(w) for w in WIDTHS})
    assert looks_untrained(rep) == ["fc.weight"]
