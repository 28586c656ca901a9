"""Rules beyond width: depth (CompleteP, depth-muP), Muon, Adam epsilon, training length and batch
size, per-class weight-decay exponents. Numbers are checked against the papers' tables and the
reference code, and every rule must be the identity at the proxy's own sizes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hptransfer.scaling import (
    DEPTH_RULES,
    KINDS,
    MUON_ADJUST_LR_FNS,
    ConfigError,
    ParamClass,
    ProxyConfig,
    get_depth_rule,
    get_rule,
    parse_count,
    suggest,
)

HIDDEN, VECTOR, OUTPUT = ParamClass.HIDDEN, ParamClass.VECTOR, ParamClass.OUTPUT

BASE = ProxyConfig(
    name="t",
    base_width=256,
    head_dim=64,
    base_depth=4,
    lr=2.0**-8,
    weight_decay=0.1,
    eps=1e-8,
    init_std=0.02,
    embed_init_std=0.02,
    output_init_std=0.0,
    tokens=1e9,
    batch_tokens=5e5,
)


def _rows(plan):  # type: ignore[no-untyped-def]
    """Every group of a plan, by label."""
    return {**{str(c): g for c, g in plan.groups.items()}, **plan.variants}


# -- depth: CompleteP (alpha 1) and depth-muP (alpha 1/2), Dey et al. Table 1 -------------------
@pytest.mark.parametrize(("name", "alpha"), [("completep", 1.0), ("depth-mup", 0.5)])
def test_depth_rows_match_completep_table_1(name: str, alpha: float) -> None:
    """Adam/AdamW rows of arXiv 2505.01618 Table 1 at width x4 and depth x4 (m = m_L = 4):
    branches x m_L^-alpha; block matrices lr eta/m * m_L^(alpha-1), wd keeps lr*wd (lambda*m *
    m_L^(1-alpha)), init sigma/sqrt(m) with no depth factor, eps eps/m * m_L^-alpha; block norm
    gains/biases lr m_L^(alpha-1); embeddings, final norm and readout: no depth factor."""
    cfg = replace(BASE, depth_rule=name, scale_eps=True)
    plan = suggest(cfg, 1024, depth=16)
    m, ml = 4.0, 4.0
    assert plan.depth_mult == ml and plan.depth_alpha == alpha and plan.depth_rule == name
    assert plan.residual_multiplier == pytest.approx(ml**-alpha)
    hidden, block, vector, output = (
        plan["hidden"],
        plan.group_for("vector", "block"),
        plan["vector"],
        plan["output"],
    )
    assert hidden.lr == pytest.approx(cfg.lr / m * ml ** (alpha - 1))
    assert hidden.weight_decay == pytest.approx(cfg.weight_decay * m * ml ** (1 - alpha))
    assert hidden.init_std == pytest.approx(cfg.init_std / math.sqrt(m))  # no depth factor
    assert hidden.eps == pytest.approx(cfg.eps / m * ml**-alpha)
    assert block.lr == pytest.approx(cfg.lr * ml ** (alpha - 1))
    assert block.eps == pytest.approx(cfg.eps / m * ml**-alpha)
    assert block.weight_decay == 0 and vector.weight_decay == 0  # vectors: no decay under muP+wd
    assert vector.lr == pytest.approx(cfg.lr) and vector.eps == pytest.approx(cfg.eps / m)
    assert output.lr == pytest.approx(cfg.lr / m)  # lr-style readout: width only
    assert output.eps == pytest.approx(cfg.eps)  # its gradient is Theta(1)
    assert output.weight_decay == pytest.approx(cfg.weight_decay * m)
    assert output.multiplier == pytest.approx(1.0)
    # the timescale of block matrices is the same at every depth (lr*wd kept)
    assert hidden.tau == pytest.approx(suggest(cfg, 1024)["hidden"].tau)


def test_completep_matches_the_reference_code() -> None:
    """EleutherAI/nanoGPT-mup@completep configure_optimizers, depth_alpha_exp = 1: hidden weights
    lr_scale = 1/m_N * m_L^0, weight_decay = wd * m_N; hidden LN and biases lr_scale m_L^0; embeddings
    and final LN 1; adam_eps *= 1/m_N * m_L^-1 (for the block parameters it is meant for)."""
    cfg = replace(BASE, depth_rule="completep", scale_eps=True)
    for m_n, m_l in ((2, 3), (8, 12), (1, 6)):
        plan = suggest(cfg, 256 * m_n, depth=4 * m_l)
        assert plan["hidden"].lr_scale == pytest.approx(1 / m_n)
        assert plan["hidden"].weight_decay == pytest.approx(cfg.weight_decay * m_n)
        assert plan.group_for("vector", "block").lr_scale == pytest.approx(1.0)
        assert plan["vector"].lr_scale == pytest.approx(1.0)
        assert plan["hidden"].eps == pytest.approx(cfg.eps / m_n / m_l)
        assert plan.residual_multiplier == pytest.approx(1 / m_l)


@given(
    st.sampled_from(sorted(DEPTH_RULES)),
    st.sampled_from(["adamw", "adam", "sgd", "muon"]),
    st.integers(0, 5),
)
def test_depth_doubling_moves_each_class_by_its_exponent(rule: str, optimizer: str, k: int) -> None:
    cfg = replace(BASE, depth_rule=rule, optimizer=optimizer, scale_eps=True)
    a, b = suggest(cfg, 512, depth=4 * 2**k), suggest(cfg, 512, depth=4 * 2 ** (k + 1))
    d = get_depth_rule(rule, optimizer=optimizer)  # type: ignore[arg-type]
    assert b.residual_multiplier == pytest.approx(a.residual_multiplier * 2**-d.alpha)
    for key, row in (
        ("hidden", "hidden"),
        ("vector.block", "block_vector"),
        ("vector", "vector"),
        ("output", "output"),
    ):
        ga, gb = _rows(a)[key], _rows(b)[key]
        ex = d.exponents[row]
        assert gb.lr == pytest.approx(ga.lr * 2**ex.lr)
        assert gb.eps == pytest.approx(ga.eps * 2**ex.eps)
        assert gb.weight_decay == pytest.approx(ga.weight_decay * 2**ex.wd)
        assert gb.lr * gb.weight_decay == pytest.approx(ga.lr * ga.weight_decay)  # per-step decay kept


def test_depth_rows_per_optimizer() -> None:
    """Adam-type and Muon updates are normalised: block lr m_L^(alpha-1). SGD's is not: the gradient
    carries the branch multiplier and the update acts through it again, so m_L^(2*alpha-1)."""
    for alpha, name in ((1.0, "completep"), (0.5, "depth-mup")):
        for opt in ("adamw", "adam", "muon"):
            assert get_depth_rule(name, optimizer=opt).exponents["hidden"].lr == alpha - 1  # type: ignore[arg-type]
        assert get_depth_rule(name, optimizer="sgd").exponents["hidden"].lr == 2 * alpha - 1
        assert get_depth_rule(name, optimizer="sgd").exponents["hidden"].eps == 0  # SGD has no eps
        assert get_depth_rule(name, optimizer="muon").exponents["hidden"].eps == 0  # NS clamp, not Adam's
        assert get_depth_rule(name, optimizer="muon").exponents["block_vector"].eps == -alpha  # AdamW
    none = get_depth_rule("none", optimizer="sgd")
    assert none.residual_exponent == 0 and all(
        (e.lr, e.wd, e.eps, e.init_std) == (0, 0, 0, 0) for e in none.exponents.values()
    )


def test_depth_errors() -> None:
    with pytest.raises(ConfigError, match=r"no proxy\.base_depth"):
        suggest(replace(BASE, base_depth=None), 512, depth=8)
    for bad in (0, -2, 2.5, "x", True, float("nan")):
        with pytest.raises(ConfigError, match="depth must be a positive integer"):
            suggest(BASE, 512, depth=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown depth rule"):
        replace(BASE, depth_rule="bogus")
    with pytest.raises(ValueError, match="alpha must be within"):
        type(DEPTH_RULES["none"]).from_alpha(1.5)


# -- Muon ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("adjust", sorted(MUON_ADJUST_LR_FNS))
def test_muon_hidden_update_keeps_the_spectral_condition(adjust: str) -> None:
    """torch.optim.Muon's update is orthogonal (spectral norm ~1) times its shape-adjusted lr; the
    spectral condition wants ||dW||_2 = Theta(sqrt(fan_out/fan_in)) = Theta(1) for hidden matrices,
    so plan lr x torch's adjustment must not move with width."""
    torch = pytest.importorskip("torch")
    try:
        from torch.optim._muon import _adjust_lr  # the function torch.optim.Muon's step calls
    except ImportError:
        pytest.skip("this torch has no torch.optim._muon._adjust_lr")

    cfg = replace(BASE, optimizer="muon", muon_adjust_lr_fn=adjust)
    norms = []
    for width in (256, 1024, 4096):
        plan = suggest(cfg, width)
        assert plan.optimizer == "muon" and plan.muon_adjust_lr_fn == adjust
        for shape in ((width, width), (4 * width, width), (width, 4 * width)):  # attn, MLP up, MLP down
            norms.append((shape, _adjust_lr(plan["hidden"].lr, adjust, torch.Size(shape))))
    for shape in ((1, 1), (4, 1), (1, 4)):
        same = [n for (sh, n) in norms if sh[0] * shape[1] == sh[1] * shape[0]]
        assert max(same) == pytest.approx(min(same))


@pytest.mark.parametrize("readout", ["lr", "multiplier"])
@pytest.mark.parametrize("wd_rule", ["linear", "sqrt", "constant"])
def test_muon_rows(readout: str, wd_rule: str) -> None:
    """Hidden lr exponent 0 (original) or -1/2 (match_rms_adamw); wd exponent = AdamW's lr exp +
    AdamW's wd exp - Muon's lr exp (same per-step decay); the rest is AdamW's."""
    adamw = get_rule(wd_rule, readout=readout)  # type: ignore[arg-type]
    for adjust, lr_exp in (("original", 0.0), ("match_rms_adamw", -0.5)):
        muon = get_rule(wd_rule, readout=readout, optimizer="muon", muon_adjust_lr_fn=adjust)  # type: ignore[arg-type]
        h, ah = muon.exponents[HIDDEN], adamw.exponents[HIDDEN]
        assert h.lr == lr_exp and h.init_std == -0.5
        assert h.wd == pytest.approx(ah.lr + ah.wd - lr_exp)
        assert h.eps == 0  # Muon's eps is not Adam's
        for cls in (VECTOR, OUTPUT):
            assert muon.exponents[cls] == adamw.exponents[cls]


def test_muon_hidden_lr_mult_and_plan() -> None:
    cfg = replace(BASE, optimizer="muon", hidden_lr_mult=16.0)
    plan = suggest(cfg, 2048)
    assert plan["hidden"].lr == pytest.approx(cfg.lr * 16)  # no width factor under "original"
    assert plan["hidden"].lr_scale == pytest.approx(16.0)
    assert plan["vector"].lr == pytest.approx(cfg.lr) and plan["output"].lr == pytest.approx(cfg.lr / 8)
    assert plan.to_dict()["muon_adjust_lr_fn"] == "original"
    assert suggest(BASE, 2048).to_dict()["muon_adjust_lr_fn"] is None
    # the optimizer argument overrides the config's
    assert suggest(BASE, 2048, optimizer="muon")["hidden"].lr == pytest.approx(cfg.lr)
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        suggest(BASE, 2048, optimizer="lion")


# -- Adam epsilon (Everett et al., arXiv 2407.05872) ---------------------------------------------
@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd", "muon"])
@pytest.mark.parametrize("readout", ["lr", "multiplier"])
def test_eps_follows_each_class_gradient(optimizer: str, readout: str) -> None:
    """Under muP the backward signal is Theta(1/m) per coordinate: vector and hidden gradients
    shrink as 1/m, an lr-style readout's does not, a multiplier-style readout's does (W = m W').
    Epsilon scaled the same way keeps Adam's update g/(sqrt(v)+eps) what it was at the base width."""
    cfg = replace(BASE, optimizer=optimizer, readout=readout)
    off, on = suggest(cfg, 4096), suggest(replace(cfg, scale_eps=True), 4096)
    assert all(g.eps == cfg.eps for g in _rows(off).values())  # default: today's single eps
    grad = {"vector": -1.0, "hidden": -1.0, "output": 0.0 if readout == "lr" else -1.0}
    has_eps = {"adamw": {"vector", "hidden", "output"}, "adam": {"vector", "hidden", "output"}, "sgd": set()}
    has_eps["muon"] = {"vector", "output"}
    for cls, e in grad.items():
        expected = cfg.eps * 16**e if cls in has_eps[optimizer] else cfg.eps
        assert on[cls].eps == pytest.approx(expected), cls
        if cls in has_eps[optimizer]:  # Adam's update for a gradient of scale 16**e is the base one
            g, g0 = 16.0**e, 1.0
            assert g / (g + on[cls].eps) == pytest.approx(g0 / (g0 + cfg.eps))


# -- training length and batch size: the AdamW timescale rule ------------------------------------
@given(st.floats(0.1, 100.0), st.floats(0.1, 100.0))
def test_timescale_rule_keeps_tau_a_fixed_fraction_of_the_run(tokens_mult: float, batch_mult: float) -> None:
    """Wang & Aitchison (arXiv 2405.13698): tau_iter = 1/(lr*wd) over the run's iterations is what
    transfers; at fixed lr, wd ~ 1/iterations = batch/tokens (Bergsma et al. 2505.13738 for batch)."""
    tokens, batch = BASE.tokens * tokens_mult, BASE.batch_tokens * batch_mult  # type: ignore[operator]
    if batch > tokens:
        return
    base, plan = suggest(BASE, 1024), suggest(BASE, 1024, tokens=tokens, batch_tokens=batch)
    assert plan.iterations == pytest.approx(tokens / batch) and plan.base_iterations == pytest.approx(2000)
    assert plan.length_mult == pytest.approx(tokens_mult / batch_mult)
    for key, g in _rows(plan).items():
        g0 = _rows(base)[key]
        assert g.lr == g0.lr  # lr is left to the width and depth rules
        assert g.weight_decay == pytest.approx(g0.weight_decay * batch_mult / tokens_mult)
        if g.weight_decay:
            assert plan.tau_fraction(g.param_class, g.kind) == pytest.approx(
                base.tau_fraction(g.param_class, g.kind)
            )


def test_timescale_rule_numbers() -> None:
    base = suggest(BASE, 256)
    assert base.tau_fraction("hidden") == pytest.approx(1 / (BASE.lr * 0.1) / 2000)
    doubled = suggest(BASE, 256, tokens=2e9)  # twice the tokens, same batch: wd halves
    assert doubled["hidden"].weight_decay == pytest.approx(0.05)
    assert doubled["hidden"].tau == pytest.approx(2 * base["hidden"].tau)
    bigger_batch = suggest(BASE, 256, batch_tokens=1e6)  # twice the batch, same tokens: wd doubles
    assert bigger_batch["hidden"].weight_decay == pytest.approx(0.2)
    both = suggest(BASE, 256, tokens=2e9, batch_tokens=1e6)  # same iterations: unchanged
    assert both["hidden"].weight_decay == pytest.approx(0.1)


def test_wd_length_exponent_interpolates_between_the_rule_and_fixed_wd() -> None:
    """benchmarks/wd_length.py measures the exponent the optimum follows; the config can take it."""
    for e in (0.0, 0.25, 1.0):
        cfg = replace(BASE, wd_length_exponent=e)
        plan = suggest(cfg, 256, tokens=8e9)  # 8x the proxy's steps
        assert plan["hidden"].weight_decay == pytest.approx(0.1 * 8**-e)
        assert plan.wd_length_factor == pytest.approx(8**-e)
        assert suggest(cfg, 256)["hidden"].weight_decay == pytest.approx(0.1)  # the proxy's own run
    with pytest.raises(ConfigError, match="wd_length_exponent must be within"):
        replace(BASE, wd_length_exponent=9.0)


def test_run_length_errors() -> None:
    with pytest.raises(ConfigError, match="no \\[train\\] tokens"):
        suggest(replace(BASE, tokens=None, batch_tokens=None), 512, tokens=1e9)
    for bad in (0, -1.0, float("inf"), float("nan"), "abc", "-3M", True):
        with pytest.raises(ConfigError, match="positive number of tokens"):
            suggest(BASE, 512, tokens=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="less than one optimizer step"):
        suggest(BASE, 512, tokens=1e5)
    assert parse_count("1M", "--batch") == 1e6
    assert parse_count(" 2e9 ", "--tokens") == 2e9
    assert parse_count("1.5g", "--tokens") == 1.5e9 and parse_count("512k", "x") == 512e3
    assert parse_count("1_048_576", "x") == 2.0**20


# -- per-class weight-decay exponents ------------------------------------------------------------
def test_wd_exponents_per_class() -> None:
    cfg = replace(BASE, wd_exponents={"attention": 0.5, "output": 0.0})
    plan = suggest(cfg, 4096)  # m = 16, rule linear (e = 1)
    assert plan.weight_decay_for("hidden", "attention") == pytest.approx(0.1 * 4)
    assert plan.weight_decay_for("hidden", "mlp") == pytest.approx(0.1 * 16)  # falls back to the rule
    assert plan.weight_decay_for("hidden") == pytest.approx(0.1 * 16)
    assert plan.weight_decay_for("output") == pytest.approx(0.1)
    # the per-class exponent shifts like the rule's under another optimizer or readout style
    muon = suggest(replace(cfg, optimizer="muon"), 4096)
    assert muon.weight_decay_for("hidden", "attention") == pytest.approx(0.1 * 16**-0.5)
    mult = suggest(replace(cfg, readout="multiplier"), 4096)
    assert mult.weight_decay_for("output") == pytest.approx(0.1 / 16)
    assert mult["output"].lr * mult["output"].weight_decay == pytest.approx(
        plan["output"].lr * plan["output"].weight_decay
    )


def test_wd_exponents_errors_and_kinds() -> None:
    with pytest.raises(ConfigError, match="unknown class 'embedding'"):
        replace(BASE, wd_exponents={"embedding": 1.0})
    with pytest.raises(ConfigError, match="within"):
        replace(BASE, wd_exponents={"mlp": 9.0})
    with pytest.raises(ConfigError, match="needs a muP rule"):
        replace(BASE, rule="sp", wd_exponents={"mlp": 1.0})
    with pytest.raises(ValueError, match="has no kind"):
        suggest(BASE, 512).group_for("output", "mlp")
    assert set(suggest(BASE, 512).variants) == {f"{c}.{k}" for c, ks in KINDS.items() for k in ks}


# -- identity at the proxy's own sizes -----------------------------------------------------------
@given(
    rule=st.sampled_from(["sp", "mup", "linear", "sqrt", "constant"]),
    depth_rule=st.sampled_from(sorted(DEPTH_RULES)),
    optimizer=st.sampled_from(["adamw", "adam", "sgd", "muon"]),
    readout=st.sampled_from(["lr", "multiplier"]),
    scale_eps=st.booleans(),
    wd_exponents=st.dictionaries(
        st.sampled_from(["attention", "mlp", "output"]), st.floats(-2, 2), max_size=3
    ),
    hidden_lr_mult=st.floats(0.01, 100),
)
def test_base_sizes_return_base_hyperparameters(  # type: ignore[no-untyped-def]
    rule, depth_rule, optimizer, readout, scale_eps, wd_exponents, hidden_lr_mult
) -> None:
    if rule == "sp":
        wd_exponents = {}
    cfg = replace(
        BASE,
        rule=rule,
        depth_rule=depth_rule,
        optimizer=optimizer,
        readout=readout,
        scale_eps=scale_eps,
        wd_exponents=wd_exponents,
        hidden_lr_mult=hidden_lr_mult,
    )
    plan = suggest(
        cfg, cfg.base_width, depth=cfg.base_depth, tokens=cfg.tokens, batch_tokens=cfg.batch_tokens
    )
    assert plan.residual_multiplier == 1 and plan.depth_mult == 1 and plan.length_mult == 1
    lr_mult = {"vector": cfg.vector_lr_mult, "hidden": hidden_lr_mult, "output": 1.0}
    for key, g in _rows(plan).items():
        assert g.lr == pytest.approx(cfg.lr * lr_mult[str(g.param_class)]), key
        assert g.eps == pytest.approx(cfg.eps), key
        assert g.weight_decay in (0.0, pytest.approx(cfg.weight_decay)), key
    without = suggest(cfg, cfg.base_width)
    assert _rows(without) == _rows(plan)
