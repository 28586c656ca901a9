"""Reference models: shapes, width-dependent classification and init scaling through the adapter."""

from __future__ import annotations

import math

import pytest
import torch

from hptransfer.models import BUILTIN_MODELS, MLP, TinyLlama, build_model, builtin_config
from hptransfer.scaling import ConfigError, ParamClass, suggest
from hptransfer.scaling.torch_adapter import classify, meta_model, param_groups, parametrize


def test_shapes():
    torch.manual_seed(0)
    assert MLP(32, depth=4, d_in=5, d_out=3)(torch.randn(7, 5)).shape == (7, 3)
    llama = TinyLlama(32, depth=1, head_dim=8, vocab_size=50, seq_len=12)
    assert llama(torch.randint(0, 50, (2, 12))).shape == (2, 12, 50)
    assert llama(torch.randint(0, 50, (2, 5))).shape == (2, 5, 50)  # shorter sequences work
    with pytest.raises(ValueError, match="seq_len"):
        llama(torch.randint(0, 50, (1, 13)))
    with pytest.raises(ValueError, match="divisible"):
        TinyLlama(30, head_dim=8)


def test_llama_is_causal():
    torch.manual_seed(0)
    m = TinyLlama(32, depth=2, head_dim=8, vocab_size=20, seq_len=10)
    x = torch.randint(0, 20, (1, 10))
    y = x.clone()
    y[0, 6] = (y[0, 6] + 1) % 20
    a, b = m(x), m(y)
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_attention_scale_is_used():
    torch.manual_seed(0)
    m = TinyLlama(32, depth=1, head_dim=8, vocab_size=20, seq_len=10)
    x = torch.randint(0, 20, (2, 10))
    ref = m(x)
    assert m.blocks[0].attn.scale == pytest.approx(1 / math.sqrt(8))
    m.blocks[0].attn.scale = 1 / 8
    assert not torch.allclose(ref, m(x))
    plan = suggest(builtin_config("llama"), 256, "mup")
    built = build_model("llama", 256, plan)
    assert built.blocks[0].attn.scale == pytest.approx(plan.attention_scale)
    assert build_model("llama", 256).blocks[0].attn.scale == pytest.approx(1 / math.sqrt(16))


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_classification_through_adapter(name):
    cfg = builtin_config(name)
    model = build_model(name, 128)
    table = classify(model, meta_model(lambda w: build_model(name, w), 64))
    counts = table.counts()
    assert counts["output"] == 1  # one readout
    assert counts["hidden"] >= 1
    out = table.by_class(ParamClass.OUTPUT)[0]
    assert out.endswith("readout.weight") or out.endswith("lm_head.weight")
    if name == "llama":
        assert "embed.weight" in table.by_class("vector")
        assert all(n in table.by_class("vector") for n, _ in model.named_parameters() if "norm" in n)
    else:
        assert "input.weight" in table.by_class("vector")
    assert cfg.base_width == 64


@pytest.mark.parametrize("rule", ["sp", "mup"])
def test_init_std_scales_with_width(rule):
    """Hidden-matrix init std ∝ 1/sqrt(width) under muP, constant under SP; readout zero."""
    cfg = builtin_config("mlp")
    stds = {}
    for w in (64, 512):
        torch.manual_seed(0)
        model = build_model("mlp", w)
        plan = suggest(cfg, w, rule)
        parametrize(model, plan, lambda v: build_model("mlp", v))
        stds[w] = model.hidden[0].weight.std().item()
        assert model.readout.weight.abs().max().item() == 0  # output_init_std = 0
        assert model.input.weight.std().item() == pytest.approx(cfg.init_std, rel=0.05)
    ratio = stds[512] / stds[64]
    expected = 1 / math.sqrt(8) if rule == "mup" else 1.0
    assert ratio == pytest.approx(expected, rel=0.05)


def test_param_groups_lr_under_mup():
    cfg = builtin_config("llama")
    w = 256
    plan = suggest(cfg, w, "mup-wd-linear")
    model = build_model("llama", w, plan)
    table = parametrize(
        model, plan, meta_model(lambda v: build_model("llama", v), 64), attention_handled=True
    )
    groups = param_groups(model, plan, table)
    lrs = sorted(g["lr"] for g in groups)
    assert lrs[0] == pytest.approx(cfg.lr / 4) and lrs[-1] == pytest.approx(cfg.lr)


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown built-in model"):
        build_model("resnet", 64)
