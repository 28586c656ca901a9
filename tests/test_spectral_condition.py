"""Issue 15: the spectral condition at one width, per-class wd calibration, timescales covered."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hptransfer.diagnostics.api import (
    calibrate_classes_from_reports,
    component_exponents,
    run_timescales,
    timescale_coverage,
)
from hptransfer.diagnostics.components import component
from hptransfer.diagnostics.condition import FAR_FACTOR, condition_row, fans, spectral_condition
from hptransfer.diagnostics.fit import TrainedExponents
from hptransfer.diagnostics.report import class_calibration_lines, cross_width_report, render
from hptransfer.diagnostics.spectral import LayerSpectrum
from hptransfer.models import builtin_config
from hptransfer.scaling import load_config, suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

WIDTHS = [64, 128, 256, 512]


def _with_singular_values(out: int, inp: int, values: list[float], seed: int = 0) -> torch.Tensor:
    """An (out, inp) matrix whose singular values are exactly ``values`` (then zeros)."""
    g = torch.Generator().manual_seed(seed)
    r = len(values)
    u, _ = torch.linalg.qr(torch.randn(out, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(inp, r, generator=g, dtype=torch.float64))
    return (u * torch.tensor(values, dtype=torch.float64)) @ v.T


# -- the spectral condition -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("out", "inp", "sigma"),
    [(256, 64, 3.0), (64, 256, 3.0), (96, 96, 0.7), (512, 48, 40.0)],
)
def test_known_singular_values_give_the_exact_ratio(out: int, inp: int, sigma: float) -> None:
    lin = nn.Linear(inp, out, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(_with_singular_values(out, inp, [sigma, 0.5 * sigma, 0.1 * sigma]))
    (row,) = spectral_condition(lin, tol=1e-10)
    assert (row.fan_in, row.fan_out) == (inp, out)
    assert row.target == pytest.approx(math.sqrt(out / inp), rel=1e-12)
    assert row.ratio == pytest.approx(sigma * math.sqrt(inp / out), rel=1e-6)
    assert row.far == (not 1 / FAR_FACTOR <= row.ratio <= FAR_FACTOR)
    assert json.loads(json.dumps(row.to_dict()))["ratio"] == pytest.approx(row.ratio)


def test_layouts_conv_conv1d_embedding_and_state_dict() -> None:
    pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")
    from transformers.pytorch_utils import Conv1D

    model = nn.Module()
    model.conv1d = Conv1D(96, 32)  # HF: weight (in=32, out=96)
    model.conv = nn.Conv2d(8, 16, 3, bias=False)  # (out, in, 3, 3): fan-in 72
    model.embed = nn.Embedding(50, 32)
    with torch.no_grad():
        model.conv1d.weight.copy_(_with_singular_values(32, 96, [6.0]))
        model.conv.weight.copy_(_with_singular_values(16, 72, [2.0]).reshape(16, 8, 3, 3))
    rows = {r.name: r for r in spectral_condition(model, tol=1e-10)}
    c1 = rows["conv1d.weight"]
    assert (c1.fan_in, c1.fan_out) == (32, 96)
    assert c1.ratio == pytest.approx(6.0 / math.sqrt(3.0), rel=1e-5)
    conv = rows["conv.weight"]
    assert (conv.fan_in, conv.fan_out) == (72, 16)
    assert conv.ratio == pytest.approx(2.0 * math.sqrt(72 / 16), rel=1e-5)
    emb = rows["embed.weight"]
    assert emb.target is None and emb.ratio is None and not emb.far and "one-hot" in emb.note
    # a bare state_dict: torch's (out, in) layout, embedding told by name
    sd_rows = {r.name: r for r in spectral_condition(model.state_dict(), tol=1e-10)}
    assert (sd_rows["conv1d.weight"].fan_in, sd_rows["conv1d.weight"].fan_out) == (96, 32)
    assert sd_rows["embed.weight"].ratio is None
    assert fans("ConvTranspose2d", (8, 4, 3, 3)) == (8, 36)


def test_far_is_an_order_of_magnitude_either_way() -> None:
    assert not condition_row("a", "Linear", (64, 64), FAR_FACTOR).far
    assert condition_row("a", "Linear", (64, 64), FAR_FACTOR * 1.01).far
    assert condition_row("a", "Linear", (64, 64), 0.99 / FAR_FACTOR).far
    assert condition_row("zero_readout", "Linear", (10, 64), 0.0).far


# -- components -----------------------------------------------------------------------------


def test_component_names_of_our_llama_and_hugging_face_models() -> None:
    pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from hptransfer.models import build_model

    ours = dict(build_model("llama", 32, suggest(builtin_config("llama"), 32)).named_parameters())
    hf_llama = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=40
        )
    )
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=40, n_positions=16))
    expected = {
        "blocks.0.attn.q.weight": "attention",
        "blocks.0.attn.o.weight": "attention",
        "blocks.0.mlp.gate.weight": "mlp",
        "blocks.0.mlp.down.weight": "mlp",
        "model.layers.0.self_attn.k_proj.weight": "attention",
        "model.layers.0.self_attn.o_proj.weight": "attention",
        "model.layers.0.mlp.up_proj.weight": "mlp",
        "model.layers.0.mlp.down_proj.weight": "mlp",
        "transformer.h.0.attn.c_attn.weight": "attention",
        "transformer.h.0.attn.c_proj.weight": "attention",  # c_proj under attn ...
        "transformer.h.0.mlp.c_fc.weight": "mlp",
        "transformer.h.0.mlp.c_proj.weight": "mlp",  # ... and under mlp
    }
    names = set(ours) | set(dict(hf_llama.named_parameters())) | set(dict(gpt2.named_parameters()))
    assert set(expected) <= names  # the names are the models' real ones
    assert {n: component(n, "hidden") for n in expected} == expected
    assert component("lm_head.weight", "output") == "output"
    assert component("embed.weight", "input") == "other"
    assert component("layer.0.output.dense.weight", "hidden") == "other"  # name does not say
    assert component("layers.0.feed_forward.w2.weight", "hidden") == "mlp"
    assert component("h.0.DenseReluDense.wo.weight", "hidden") == "mlp"  # T5's wo is the MLP's
    assert component("layers.0.attention.wo.weight", "hidden") == "attention"  # Meta LLaMA's is not
    assert component("layers.0.q_proj.weight", "hidden") == "attention"  # a leaf alone


# -- per-class calibration ------------------------------------------------------------------


def _spec(name: str, shape: tuple[int, ...], sigma: float) -> LayerSpectrum:
    return LayerSpectrum(
        name=name, layer_type="Linear", shape=shape, sigma=(sigma,), fro=3 * sigma, error_bound=0.0
    )


def _model(w: int, a: float, b: float, out: float = -0.5, noise: float = 0.0, seed: int = 0) -> dict:
    """Attention sigma_max ∝ w^a, MLP ∝ w^b, readout (fan-in w, fan-out 100) ∝ w^out."""
    rng = np.random.default_rng(seed + w)

    def n() -> float:
        return math.exp(rng.normal(0.0, noise)) if noise else 1.0

    rows = {}
    for i in range(2):
        for p in ("q", "k", "v", "o"):
            name = f"blocks.{i}.attn.{p}.weight"
            rows[name] = _spec(name, (w, w), 2.0 * (w / 64) ** a * n())
        for p, shape in (("up", (4 * w, w)), ("down", (w, 4 * w))):
            name = f"blocks.{i}.mlp.{p}.weight"
            rows[name] = _spec(name, shape, 3.0 * (w / 64) ** b * n())
    rows["lm_head.weight"] = _spec("lm_head.weight", (100, w), 5.0 * (w / 64) ** out * n())
    return rows


def test_per_class_exponents_recovered_and_the_split_printed_in_config_form(tmp_path: Path) -> None:
    a, b = 0.2, -0.15  # trained under muP + linear wd (e0 = 1): e* = 1 + 2 alpha
    exps = {c: TrainedExponents(-1.0, 1.0) for c in ("attention", "mlp", "output")}
    rep = cross_width_report(
        {w: _model(w, a, b, noise=0.01) for w in [64, 96, 128, 192, 256, 384, 512]},
        lr_exponent=-1.0,
        wd_exponent=1.0,
        class_exponents=exps,
    )
    cals = rep.class_calibrations
    for comp, alpha in (("attention", a), ("mlp", b), ("output", 0.0)):
        cal = cals[comp]
        assert cal.ci is not None and cal.ci[0] <= 1 + 2 * alpha <= cal.ci[1], comp
        assert cal.exponent == pytest.approx(1 + 2 * alpha, abs=0.05)
    # the readout shrinks as w^-1/2 like its target sqrt(100/w): on the condition, e* = e0
    assert rep.layers["lm_head.weight"].fit.alpha == pytest.approx(-0.5, abs=0.02)  # type: ignore[union-attr]
    assert ("attention", "mlp") in rep.class_disagreements()
    data = json.loads(rep.to_json())
    assert data["class_calibration"]["attention"]["wd_exponent"] == pytest.approx(1 + 2 * a, abs=0.05)
    assert len(data["class_calibration"]["mlp"]["matrices"]) == 4
    assert ["attention", "mlp"] in data["class_disagreements"]
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(render(rep))
    text = console.export_text()
    assert (
        "attention and mlp, attention and output, mlp and output: the intervals do not overlap"
        in " ".join(text.split())
    )
    flat = " ".join(text.split())  # undo the console's line wrapping
    toml = flat[flat.index("wd_exponents = {") : flat.index("}", flat.index("wd_exponents = {")) + 1]
    assert "under [rule] in the config" in flat
    parsed = tomllib.loads("[rule]\n" + toml)["rule"]["wd_exponents"]
    assert parsed == rep.wd_exponents() == data["wd_exponents"]
    path = tmp_path / "proxy.toml"  # the printed line is a valid config, read by load_config
    path.write_text('[rule]\nname = "mup-wd-linear"\n' + toml + "\n", encoding="utf-8")
    assert dict(load_config(path).wd_exponents) == parsed
    assert parsed["attention"] == pytest.approx(1 + 2 * a, abs=0.05)
    assert parsed["mlp"] == pytest.approx(1 + 2 * b, abs=0.05)
    # one slope for everything: the classes agree and no per-class config is printed
    same = cross_width_report(
        {w: _model(w, 0.1, 0.1, out=-0.4, noise=0.01) for w in WIDTHS}, class_exponents=exps
    )
    assert same.class_disagreements() == []
    console = Console(width=250, record=True)
    console.print(render(same))
    assert "wd_exponents = {" not in console.export_text()


def test_a_class_too_noisy_to_recommend_is_left_out_of_the_config_line() -> None:
    # attention exact (e* = 1 + 2·0.5 = 2); the MLP zig-zags ±8%: its interval is wider than 0.5
    spectra = {}
    for i, w in enumerate(WIDTHS):
        wobble = 1.08 if i % 2 else 1 / 1.08
        spectra[w] = {
            "blocks.0.attn.q.weight": _spec("blocks.0.attn.q.weight", (w, w), (w / 64) ** 0.5),
            "blocks.0.mlp.up.weight": _spec("blocks.0.mlp.up.weight", (4 * w, w), wobble),
        }
    rep = cross_width_report(
        spectra, class_exponents={c: TrainedExponents(-1.0, 1.0) for c in ("attention", "mlp")}
    )
    mlp = rep.class_calibrations["mlp"]
    assert mlp.too_wide() is not None and mlp.ci is not None and mlp.ci[1] < 2.0
    assert rep.class_disagreements() == [("attention", "mlp")]
    assert rep.wd_exponents() == {"attention": 2.0}
    (_, advice) = class_calibration_lines(rep)
    assert "wd_exponents = {attention = 2.0} under [rule]" in advice
    assert "mlp: interval too wide to recommend, keeps the rule's exponent" in advice


def test_readout_multiplier_style_calibrates_the_effective_weight() -> None:
    # the stored readout of the mup-style rule is m x the lr-style one: slope +1 higher
    spectra = {w: {"head.weight": _spec("head.weight", (100, w), 5.0 * (w / 64) ** 0.5)} for w in WIDTHS}
    for w in WIDTHS:
        spectra[w]["fc.weight"] = _spec("fc.weight", (w, w), 1.0)
    rep = cross_width_report(spectra, class_exponents={"output": TrainedExponents(0.0, 0.0, multiplier=-1.0)})
    # effective weight ∝ w^-1/2, on its target: the exponent is the trained e = 0 + 0 + 1 = 1
    assert rep.class_calibrations["output"].exponent == pytest.approx(1.0)


def test_two_run_per_class_calibration_interpolates_each_class() -> None:
    # attention's slope reacts to e as 0.6 - e, MLP's as 1.0 - e: crossings at 0.6 and 1.0
    def report(e: float) -> object:
        exps = {c: TrainedExponents(-1.0, e) for c in ("attention", "mlp")}
        return cross_width_report(
            {w: _model(w, 0.6 - e, 1.0 - e) for w in WIDTHS}, class_exponents=exps, rule=f"e{e}"
        )

    two = calibrate_classes_from_reports({"sqrt": report(0.5), "linear": report(1.0)})  # type: ignore[dict-item]
    assert two["attention"][0].exponent == pytest.approx(0.6)
    assert two["mlp"][0].exponent == pytest.approx(1.0)
    assert two["mlp"][1] == ("sqrt", "linear")
    assert "output" not in two  # its trained exponents were not given


# -- exponents and timescales from the plans ------------------------------------------------


def test_component_exponents_read_off_the_plans() -> None:
    cfg = builtin_config("llama")
    ex = component_exponents(cfg, "mup-wd-sqrt", [32, 128])
    assert ex["attention"] == ex["mlp"]
    assert (ex["mlp"].lr, ex["mlp"].wd, ex["mlp"].multiplier) == pytest.approx((-1.0, 0.5, 0.0))
    mult = component_exponents(replace(cfg, readout="multiplier"), "mup-wd-linear", [32, 128])
    assert (mult["output"].lr, mult["output"].wd, mult["output"].multiplier) == pytest.approx(
        (0.0, 0.0, -1.0)
    )
    assert component_exponents(cfg, "mup", [32, 128])["mlp"].wd == pytest.approx(0.0)
    # per-class exponents of the config (ProxyConfig.wd_exponents) are what the proxies train with
    per = replace(cfg, rule="mup-wd-linear", wd_exponents={"mlp": 0.75, "output": 0.25})
    ex = component_exponents(per, None, [32, 128])
    assert (ex["attention"].wd, ex["mlp"].wd, ex["output"].wd) == pytest.approx((1.0, 0.75, 0.25))
    steps = run_timescales(suggest(per, 128), 100)
    m = 128 / per.base_width  # lr·wd ∝ m^(e-1) per class
    base = 100 * per.lr * per.weight_decay
    assert steps["attention"] == pytest.approx(base)
    assert steps["mlp"] == pytest.approx(base * m**-0.25) and steps["output"] == pytest.approx(
        base * m**-0.75
    )


@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_timescales_covered_per_width_and_class(rule: str) -> None:
    cfg = replace(builtin_config("llama"), weight_decay=0.5)
    steps, widths = 300, [16, 64, 256]
    cover = timescale_coverage(cfg, rule, widths, steps)
    for w in widths:
        plan = suggest(cfg, w, rule)
        got = run_timescales(plan, steps)
        want = {
            c: steps * plan[k].lr * plan[k].weight_decay for c, k in (("mlp", "hidden"), ("output", "output"))
        }
        assert got["mlp"] == pytest.approx(want["mlp"]) and got["output"] == pytest.approx(want["output"])
        assert cover.by_width[w] == got
    hidden = [cover.by_width[w]["mlp"] for w in widths]
    assert cover.covered == pytest.approx(min(hidden))
    if rule == "linear":  # lr·wd constant in width
        assert max(hidden) == pytest.approx(min(hidden)) and "every width" in cover.note
    else:  # lr·wd ∝ m^-1/2: the widest width covers half of what 4x narrower does
        assert hidden[0] == pytest.approx(2 * hidden[1]) == pytest.approx(4 * hidden[2])
        assert "width 256:" in cover.note


def test_diagnose_llama_reports_classes_condition_and_timescales() -> None:
    """End to end on the built-in LLaMA (zero-initialised readout): the readout's sigma_max is
    measured (a zero matrix at step 0 once pinned its warm-started estimate at 0), and the
    report carries the per-class calibration, the condition ratios and the timescales."""
    from hptransfer.diagnostics import diagnose

    cfg = replace(builtin_config("llama"), weight_decay=1.0)
    steps = 12
    rep = diagnose(
        "llama", [32, 64], cfg, "sqrt", steps, coord=False, batch_size=8, model_kwargs={"depth": 1}
    )
    head = rep.layers["lm_head.weight"]
    assert head.component == "output" and all(s > 0 for s in head.sigma.values())
    assert set(rep.class_calibrations) == {"attention", "mlp", "output"}
    assert {r.component for r in rep.layers.values()} == {"attention", "mlp", "output", "other"}
    for row in rep.layers.values():
        if row.component != "other":
            assert set(row.condition) == {32, 64}
    for w in (32, 64):
        assert rep.timescales_by_width[w] == pytest.approx(run_timescales(suggest(cfg, w, "sqrt"), steps))
    data = json.loads(rep.to_json())
    assert set(data["timescales_by_width"]) == {"32", "64"}
    assert set(data["layers"][1]["spectral_condition"]) == {"32", "64"}
