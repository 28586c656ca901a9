"""The width rules: exact values, presets, and properties that must hold for any config."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hptransfer.scaling import (
    RULES,
    WD_EXPONENTS,
    ConfigError,
    ParamClass,
    ProxyConfig,
    WidthError,
    default_config,
    get_rule,
    suggest,
)

HIDDEN, VECTOR, OUTPUT = ParamClass.HIDDEN, ParamClass.VECTOR, ParamClass.OUTPUT

configs = st.builds(
    ProxyConfig,
    base_width=st.sampled_from([64, 128, 256, 512]),
    head_dim=st.sampled_from([16, 32, 64]),
    lr=st.floats(1e-5, 1.0),
    weight_decay=st.floats(0.0, 10.0),
    vector_lr_mult=st.floats(0.01, 100.0),
    init_std=st.floats(1e-4, 1.0),
    embed_init_std=st.floats(1e-4, 1.0),
    output_init_std=st.floats(0.0, 1.0),
    output_mult=st.floats(0.01, 100.0),
    attn_mult=st.floats(0.01, 100.0),
    rule=st.sampled_from(sorted(RULES)),
    readout=st.sampled_from(["lr", "multiplier"]),
).filter(lambda c: c.base_width % c.head_dim == 0)

doublings = st.integers(min_value=-2, max_value=6)


def _at(config: ProxyConfig, k: int) -> int:
    return int(config.base_width * 2.0**k)


@given(configs)
def test_base_width_returns_base_hyperparameters(config: ProxyConfig) -> None:
    plan = suggest(config, config.base_width)
    assert plan.width_mult == 1
    base_std = {VECTOR: config.embed_init_std, HIDDEN: config.init_std, OUTPUT: config.output_init_std}
    for cls in ParamClass:
        g = plan[cls]
        lr_mult = config.vector_lr_mult if cls is VECTOR else 1.0
        assert g.lr == pytest.approx(config.lr * lr_mult)
        assert g.lr_scale == pytest.approx(lr_mult)
        assert g.multiplier == pytest.approx(config.output_mult if cls is OUTPUT else 1.0)
        assert g.init_std == pytest.approx(base_std[cls])
    wd_on = config.scaling_rule().wd_exponent is None
    assert plan[HIDDEN].weight_decay == pytest.approx(config.weight_decay)
    assert plan[VECTOR].weight_decay == pytest.approx(config.weight_decay if wd_on else 0.0)
    assert plan.attention_scale == pytest.approx(config.attn_mult / math.sqrt(config.head_dim))


@given(configs, doublings)
def test_mup_hidden_lr_halves_when_width_doubles(config: ProxyConfig, k: int) -> None:
    assume(config.scaling_rule().is_mup and _at(config, k) >= config.min_width)
    a, b = suggest(config, _at(config, k)), suggest(config, _at(config, k + 1))
    assert b[HIDDEN].lr == pytest.approx(a[HIDDEN].lr / 2)
    assert b[VECTOR].lr == pytest.approx(a[VECTOR].lr)  # vector-like lr is width-independent
    assert b[HIDDEN].init_std == pytest.approx(a[HIDDEN].init_std / math.sqrt(2))
    assert b[HIDDEN].lr_scale * config.lr == pytest.approx(b[HIDDEN].lr)
    assert b[VECTOR].lr == pytest.approx(config.lr * config.vector_lr_mult)


@given(configs, doublings)
def test_wd_follows_the_chosen_exponent(config: ProxyConfig, k: int) -> None:
    rule = config.scaling_rule()
    assume(_at(config, k) >= config.min_width)
    a, b = suggest(config, _at(config, k)), suggest(config, _at(config, k + 1))
    e = rule.wd_exponent if rule.wd_exponent is not None else 0.0
    assert b[HIDDEN].weight_decay == pytest.approx(a[HIDDEN].weight_decay * 2**e)
    if rule.wd_exponent is not None:
        assert b[VECTOR].weight_decay == 0 and a[VECTOR].weight_decay == 0


@given(configs, doublings)
def test_readout_styles_are_the_same_function_under_adam(config: ProxyConfig, k: int) -> None:
    """lr style (W', lr/m, wd·m^e) and multiplier style (W = m·W', lr, wd·m^(e-1)) must agree:
    the effective readout has the same init, the same per-step decay lr·wd and the same
    effective update size lr·mult."""
    assume(config.scaling_rule().is_mup and _at(config, k) >= config.min_width)
    lr_style = suggest(replace(config, readout="lr"), _at(config, k))[OUTPUT]
    mult_style = suggest(replace(config, readout="multiplier"), _at(config, k))[OUTPUT]
    assert mult_style.init_std * mult_style.multiplier == pytest.approx(
        lr_style.init_std * lr_style.multiplier
    )
    assert mult_style.lr * mult_style.weight_decay == pytest.approx(lr_style.lr * lr_style.weight_decay)
    assert mult_style.lr * mult_style.multiplier == pytest.approx(lr_style.lr * lr_style.multiplier)
    # keeping the model's own init: the readout's effective scale moves the same way
    m = _at(config, k) / config.base_width
    assert m**mult_style.init_exponent * mult_style.multiplier == pytest.approx(
        m**lr_style.init_exponent * lr_style.multiplier
    )


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd", "muon"])
@pytest.mark.parametrize("readout", ["lr", "multiplier"])
def test_optimizer_rows(optimizer: str, readout: str) -> None:
    """lr exponents per optimizer as in Tensor Programs V / mup's MuAdam and MuSGD, and the
    per-step decay lr·wd of every class moves as under AdamW."""
    rule = get_rule("linear", optimizer=optimizer, readout=readout)  # type: ignore[arg-type]
    adamw = get_rule("linear", readout=readout)  # type: ignore[arg-type]
    lr = {c: rule.exponents[c].lr for c in ParamClass}
    expected = {
        ("adamw", "lr"): (0, -1, -1),
        ("adam", "lr"): (0, -1, -1),
        ("sgd", "lr"): (1, 0, -1),
        ("adamw", "multiplier"): (0, -1, 0),
        ("adam", "multiplier"): (0, -1, 0),
        ("sgd", "multiplier"): (1, 0, 1),
        ("muon", "lr"): (0, 0, -1),  # Muon (adjust_lr_fn "original") on hidden matrices, AdamW rest
        ("muon", "multiplier"): (0, 0, 0),
    }[(optimizer, readout)]
    assert (lr[VECTOR], lr[HIDDEN], lr[OUTPUT]) == expected
    for c in (HIDDEN, OUTPUT):
        ex, ref = rule.exponents[c], adamw.exponents[c]
        assert ex.lr + ex.wd == pytest.approx(ref.lr + ref.wd)
        assert ex.init_std == ref.init_std and ex.multiplier == ref.multiplier
    assert rule.optimizer == optimizer
    # linear under SGD or Muon keeps lr·wd per class constant: hidden wd does not move (mup's MuSGD)
    if optimizer in ("sgd", "muon"):
        assert rule.exponents[HIDDEN].wd == 0


def test_exact_values_for_the_default_at_4096() -> None:
    cfg = default_config()
    plan = suggest(cfg, 4096)
    assert plan.width_mult == 16
    assert plan.rule.name == "mup-wd-linear"
    assert plan[HIDDEN].lr == pytest.approx(cfg.lr / 16)
    assert plan[HIDDEN].weight_decay == pytest.approx(cfg.weight_decay * 16)
    # linear rule: the AdamW timescale of matrices is the same at every width
    assert plan[HIDDEN].tau == pytest.approx(suggest(cfg, cfg.base_width)[HIDDEN].tau)
    sqrt_plan = suggest(cfg, 4096, "sqrt")
    assert sqrt_plan[HIDDEN].weight_decay == pytest.approx(cfg.weight_decay * 4)
    assert plan[VECTOR].weight_decay == 0 and math.isinf(plan[VECTOR].tau)
    assert plan.n_heads == 64 and plan.head_dim == 64
    assert plan.attention_scale == pytest.approx(1 / 8)


def test_sp_changes_nothing_but_mup_attention_goes_as_one_over_head_dim() -> None:
    cfg = replace(default_config(), head_dim=None, n_heads=4)  # head size grows with width
    sp, mup = suggest(cfg, 1024, "sp"), suggest(cfg, 1024, "mup")
    for cls in ParamClass:
        assert sp[cls].lr == cfg.lr and sp[cls].weight_decay == cfg.weight_decay
    assert sp.head_dim == 256
    assert sp.attention_scale == pytest.approx(1 / math.sqrt(256))
    assert mup.attention_scale == pytest.approx(1 / math.sqrt(64) * 64 / 256)


def test_presets_and_aliases() -> None:
    assert get_rule("sqrt").wd_exponent == WD_EXPONENTS["sqrt"] == 0.5
    assert get_rule("linear") is RULES["mup-wd-linear"]
    assert get_rule("constant").wd_exponent == 0.0
    custom = get_rule("custom", wd_exponent=0.75)
    assert custom.wd_exponent == 0.75 and custom.name == "mup-wd-0.75"
    assert get_rule("mup-wd-sqrt", readout="multiplier").exponents[OUTPUT].wd == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        get_rule("nope")
    with pytest.raises(ValueError, match="needs a wd_exponent"):
        get_rule("custom")
    with pytest.raises(ValueError, match="takes no wd_exponent"):
        get_rule("sp", wd_exponent=1.0)


@pytest.mark.parametrize(
    ("width", "message"),
    [
        (0, "positive integer"),
        (-3, "positive integer"),
        (256.5, "positive integer"),
        ("abc", "positive integer"),
        (True, "positive integer"),
        (float("nan"), "positive integer"),
        (32, "smaller than the model allows"),
        (1000, "not divisible by head_dim=64"),
    ],
)
def test_bad_widths(width: object, message: str) -> None:
    with pytest.raises(WidthError, match=message):
        suggest(default_config(), width)  # type: ignore[arg-type]


def test_width_as_integral_string_or_float_is_accepted() -> None:
    assert suggest(default_config(), "512").width == 512  # type: ignore[arg-type]
    assert suggest(default_config(), 512.0).width == 512  # type: ignore[arg-type]


def test_fixed_head_count_needs_divisible_width() -> None:
    cfg = ProxyConfig(base_width=96, head_dim=None, n_heads=3)
    assert suggest(cfg, 384).head_dim == 128
    with pytest.raises(WidthError, match="head count n_heads=3"):
        suggest(cfg, 100)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(WidthError, ConfigError) and issubclass(ConfigError, ValueError)


def test_bad_api_input_is_a_clear_config_error() -> None:
    import numpy as np

    assert suggest(default_config(), np.int64(1024)).width == 1024
    assert suggest(default_config(), "1024").width == 1024
    for make, message in (
        (lambda: ProxyConfig(rule=5), "rule.name must be a string"),  # type: ignore[arg-type]
        (lambda: ProxyConfig(rule=["a"]), "rule.name must be a string"),  # type: ignore[arg-type]
        (lambda: suggest(default_config(), 1024, rule=5), "ScalingRule or a preset name"),  # type: ignore[arg-type]
        (
            lambda: suggest(ProxyConfig(weight_decay=1e308), 4096),
            "weight_decay at width 4096 is not a finite",
        ),
        (lambda: ProxyConfig(rule="custom", wd_exponent=600), "within ±4"),
        (lambda: get_rule("linear", wd_exponent=0.5), "fixes the wd exponent"),
    ):
        with pytest.raises((ConfigError, ValueError), match=message):
            make()
    with pytest.raises(WidthError, match="larger than any model"):
        suggest(default_config(), 10**400)
    with pytest.raises(WidthError, match="larger than any model"):
        suggest(default_config(), "9007199254740993")  # no silent rounding to ...992
