"""Wrapping models this project did not write: the identity at the base width, the muP
correction relative to the model's own init elsewhere, tied weights, odd shapes, user groups
and other optimizers."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hptransfer import ParamClass, ProxyConfig, suggest
from hptransfer.models import TinyLlama
from hptransfer.scaling.torch_adapter import (
    ClassificationError,
    build_optimizer,
    meta_model,
    param_groups,
    parametrize,
)

KEEP = ProxyConfig(base_width=64, head_dim=16, lr=2.0**-7, weight_decay=0.1)  # keeps the model's init


def make_mlp(width: int, d_in: int = 12, d_out: int = 5) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, d_out)
    )


class Gpt2Like(nn.Module):
    """nanoGPT style: fixed-std init normal(0, 0.02) at every width, embedding tied to the head,
    head registered *before* the embedding."""

    def __init__(self, width: int, vocab: int = 40) -> None:
        super().__init__()
        self.head = nn.Linear(width, vocab, bias=False)
        self.wte = nn.Embedding(vocab, width)
        self.fc = nn.Linear(width, width)
        self.head.weight = self.wte.weight
        for p in self.parameters():
            if p.ndim == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.wte(idx))))


def _llama(width: int) -> nn.Module:
    return TinyLlama(width, depth=2, head_dim=16, vocab_size=64, seq_len=16)


def _hf_llama(width: int) -> nn.Module:
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=width,
        intermediate_size=3 * width,
        num_hidden_layers=2,
        num_attention_heads=width // 16,
        num_key_value_heads=width // 32,
        head_dim=16,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(cfg)


def _hf_gpt2(width: int) -> nn.Module:
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")
    cfg = transformers.GPT2Config(
        vocab_size=64,
        n_embd=width,
        n_layer=2,
        n_head=width // 16,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


def _hf_vit(width: int) -> nn.Module:
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")
    cfg = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=width,
        num_hidden_layers=1,
        num_attention_heads=width // 16,
        intermediate_size=2 * width,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(cfg)


MODELS: dict[str, tuple[Callable[[int], nn.Module], Callable[[], torch.Tensor]]] = {
    "mlp": (make_mlp, lambda: torch.randn(3, 12)),
    "tinyllama": (_llama, lambda: torch.randint(0, 64, (2, 16))),
    "gpt2-like": (Gpt2Like, lambda: torch.randint(0, 40, (2, 7))),
    "hf-llama": (_hf_llama, lambda: torch.randint(0, 64, (2, 16))),
    "hf-gpt2": (_hf_gpt2, lambda: torch.randint(0, 64, (2, 16))),
    "hf-vit": (_hf_vit, lambda: torch.randn(2, 1, 8, 8)),
}


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = model(x)
    return y if isinstance(y, torch.Tensor) else y.logits


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rule", ["mup-wd-linear", "mup-wd-sqrt", "sp"])
def test_wrapping_is_the_identity_at_the_base_width(name: str, rule: str) -> None:
    factory, batch = MODELS[name]
    torch.manual_seed(0)
    model = factory(64).eval()
    x = batch()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    expected = _out(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about either
        parametrize(model, suggest(KEEP, 64, rule), factory)
        assert torch.equal(_out(model, x), expected)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())


#: Residual blocks of the models that have them (the others have no depth to carry).
BLOCKS = {"tinyllama": 2, "hf-llama": 2, "hf-gpt2": 2, "hf-vit": 1}


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("depth_rule", ["completep", "depth-mup"])
def test_wrapping_is_the_identity_at_the_base_width_and_depth(name: str, depth_rule: str) -> None:
    """A depth rule at the base depth changes nothing: the blocks are found and counted, no
    branch is hooked, outputs and state_dict are the model's own."""
    factory, batch = MODELS[name]
    depth = BLOCKS[name]
    torch.manual_seed(0)
    model = factory(64).eval()
    x = batch()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    expected = _out(model, x)
    plan = suggest(replace(KEEP, base_depth=depth, depth_rule=depth_rule), 64, depth=depth)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = parametrize(model, plan, factory)
        assert torch.equal(_out(model, x), expected)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    assert model.state_dict().keys() == before.keys()
    assert any(info.in_block for info in table.values())  # the blocks were found
    assert not any(m._forward_hooks for m in model.modules() if m is not model)


class ResidualMLP(nn.Module):
    """Pre-norm residual MLP blocks, written outside the project (fc1/fc2 naming)."""

    def __init__(self, width: int, depth: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        layers = (("norm", nn.LayerNorm), ("fc1", nn.Linear), ("act", nn.GELU), ("fc2", nn.Linear))
        shapes = {"norm": (width,), "fc1": (width, 2 * width), "act": (), "fc2": (2 * width, width)}
        self.blocks = nn.ModuleList(
            nn.Sequential(OrderedDict((n, cls(*shapes[n])) for n, cls in layers)) for _ in range(depth)
        )
        self.out = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


@settings(max_examples=10, deadline=None)
@given(
    base=st.sampled_from([16, 32]),
    depth=st.integers(1, 4),
    depth_rule=st.sampled_from(["completep", "depth-mup", "none"]),
    seed=st.integers(0, 2**16),
)
def test_identity_property_at_the_base_depth(base: int, depth: int, depth_rule: str, seed: int) -> None:
    def factory(w: int) -> nn.Module:
        return ResidualMLP(w, depth, 5, 3)

    torch.manual_seed(seed)
    model = factory(base)
    x = torch.randn(4, 5)
    expected = model(x)
    cfg = ProxyConfig(base_width=base, lr=1e-3, base_depth=depth, depth_rule=depth_rule)
    parametrize(model, suggest(cfg, base, depth=depth), factory, residual_branches=[r"fc2$"])
    assert torch.equal(model(x), expected)


@pytest.mark.parametrize("name", ["mlp", "tinyllama", "hf-llama"])
def test_zero_readout_is_the_only_change_when_asked(name: str) -> None:
    factory = MODELS[name][0]
    torch.manual_seed(0)
    model = factory(64).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    table = parametrize(model, suggest(replace(KEEP, output_init_std=0.0), 64), factory)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(table.by_class("output"))
    assert all(torch.count_nonzero(dict(model.named_parameters())[n]) == 0 for n in changed)


@settings(max_examples=15, deadline=None)
@given(
    base=st.sampled_from([16, 32, 48]),
    d_in=st.integers(1, 9),
    d_out=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_identity_property_on_any_mlp(base: int, d_in: int, d_out: int, seed: int) -> None:
    def factory(w: int) -> nn.Module:
        return make_mlp(w, d_in, d_out)

    torch.manual_seed(seed)
    model = factory(base)
    x = torch.randn(4, d_in)
    expected = model(x)
    cfg = ProxyConfig(base_width=base, lr=1e-3)
    parametrize(model, suggest(cfg, base), factory)
    assert torch.equal(model(x), expected)


def _rms(t: torch.Tensor) -> float:
    return t.detach().float().pow(2).mean().sqrt().item()


@pytest.mark.parametrize("readout", ["lr", "multiplier"])
def test_torch_default_init_is_corrected_like_mup(readout: str) -> None:
    """Fan-in-scaled init (torch's default) already scales right for hidden matrices; the
    readout takes the extra factor; biases return to their base-width scale (mup's
    set_base_shapes(rescale_params=True))."""
    cfg = replace(KEEP, readout=readout)
    torch.manual_seed(0)
    own = make_mlp(1024)
    model = make_mlp(1024)
    model.load_state_dict(own.state_dict())
    parametrize(model, suggest(cfg, 1024), make_mlp)  # m = 16
    assert torch.equal(model[2].weight, own[2].weight)  # hidden: unchanged
    assert torch.equal(model[0].weight, own[0].weight)  # input layer: fan-in fixed, unchanged
    readout_factor = 16**-0.5 if readout == "lr" else 16**0.5
    assert torch.allclose(model[4].weight, own[4].weight * readout_factor)
    assert torch.allclose(model[2].bias, own[2].bias * 4)  # 1/sqrt(fan_in) bias: back to base scale
    assert torch.equal(model[0].bias, own[0].bias)


@pytest.mark.parametrize("reference", ["factory", "meta"])
def test_fixed_std_init_is_rescaled(reference: str) -> None:
    torch.manual_seed(0)
    model = Gpt2Like(256)
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = Gpt2Like if reference == "factory" else meta_model(Gpt2Like, 64)
    table = parametrize(model, suggest(KEEP, 256), ref)  # m = 4
    assert table["fc.weight"].param_class is ParamClass.HIDDEN
    assert torch.allclose(model.fc.weight, own["fc.weight"] / 2)  # 0.02 * m**-0.5
    assert torch.equal(model.wte.weight, own["head.weight"])  # tied: vector-like, kept
    assert _rms(model.fc.weight) == pytest.approx(0.01, rel=0.03)


def test_fixed_std_normal_told_from_kaiming_normal_with_a_real_reference() -> None:
    """A normal init whose std is 1/sqrt(fan_in) is fan-in scaled, not fixed: the factory's real
    base-width model shows it."""

    def kaiming(width: int) -> nn.Module:
        model = make_mlp(width)
        for mod in model:
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, 0.0, mod.in_features**-0.5)
        return model

    torch.manual_seed(0)
    model = kaiming(1024)
    hidden = model[2].weight.detach().clone()
    parametrize(model, suggest(KEEP, 1024), kaiming)
    assert torch.equal(model[2].weight, hidden)


def test_tied_embedding_and_readout() -> None:
    torch.manual_seed(0)
    model = Gpt2Like(256)
    plan = suggest(replace(KEEP, output_mult=2.0), 256)
    table = parametrize(model, plan, Gpt2Like)
    assert table.tied() == ["head.weight"]  # named_parameters keeps the first registration
    info = table["head.weight"]
    assert info.param_class is ParamClass.VECTOR and info.readouts == ("head",)
    assert plan.tied_output_multiplier == pytest.approx(2.0 / 4)
    idx = torch.randint(0, 40, (2, 5))
    hidden = torch.relu(model.fc(model.wte(idx)))
    assert torch.allclose(model(idx), hidden @ model.wte.weight.T * 0.5, atol=1e-6)
    groups = param_groups(model, plan, table)
    tied_group = next(g for g in groups if any(p is model.wte.weight for p in g["params"]))
    assert tied_group["lr"] == pytest.approx(plan["vector"].lr) and tied_group["weight_decay"] == 0


def test_hf_gpt2_conv1d_and_tied_head() -> None:
    torch.manual_seed(0)
    model = _hf_gpt2(256)
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan = suggest(KEEP, 256)
    table = parametrize(model, plan, _hf_gpt2)
    assert table.tied() == ["transformer.wte.weight"]
    assert table["transformer.wte.weight"].readouts == ("lm_head",)
    assert table["transformer.wpe.weight"].param_class is ParamClass.VECTOR
    for name in ("c_attn", "c_proj", "c_fc"):
        key = next(n for n in table if f".{name}.weight" in n)
        assert table[key].param_class is ParamClass.HIDDEN, key  # Conv1D stores (in, out)
        assert torch.allclose(dict(model.named_parameters())[key], own[key] / 2)  # 0.02 fixed std
    assert torch.equal(model.transformer.wte.weight, own["transformer.wte.weight"])


def test_readout_stored_in_out_needs_an_override() -> None:
    class InOut(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.fc = nn.Linear(8, width)
            self.w_out = nn.Parameter(torch.randn(width, 3) / width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)) @ self.w_out

    with pytest.raises(ClassificationError, match=r"'w_out'.*does not say which is fan-in.*overrides="):
        parametrize(InOut(128), suggest(KEEP, 128), InOut)
    table = parametrize(InOut(128), suggest(KEEP, 128), InOut, overrides={r"^w_out$": "output"})
    assert table["w_out"].param_class is ParamClass.OUTPUT


def test_bottleneck_is_readout_like_and_squared_dims_are_refused() -> None:
    def bottleneck(width: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(4, width), nn.Linear(width, 8), nn.Linear(8, width), nn.Linear(width, 2)
        )

    table = parametrize(bottleneck(128), suggest(KEEP, 128), bottleneck)
    assert table["1.weight"].param_class is ParamClass.OUTPUT
    assert table["2.weight"].param_class is ParamClass.VECTOR

    def squared(width: int) -> nn.Module:
        return nn.Sequential(nn.Linear(width, width * width // 64), nn.Linear(width * width // 64, 3))

    with pytest.raises(ClassificationError, match=r"'0\.weight': dim 0 grows 4× while the width grows 2×"):
        parametrize(squared(128), suggest(KEEP, 128), squared)


def test_plan_for_another_width_is_an_error() -> None:
    with pytest.raises(ClassificationError, match="plan is for width 512"):
        parametrize(make_mlp(256), suggest(KEEP, 512), meta_model(make_mlp, 64))
    with pytest.raises(ClassificationError, match="plan is for width 512"):
        parametrize(make_mlp(256), suggest(KEEP, 512), make_mlp)
    with pytest.raises(ClassificationError, match="pass the factory"):
        parametrize(make_mlp(64), suggest(KEEP, 64), meta_model(make_mlp, 64))


def test_user_groups_keep_their_keys_and_split_by_class() -> None:
    model = make_mlp(256)
    plan = suggest(KEEP, 256)
    table = parametrize(model, plan, make_mlp)
    groups = param_groups(
        model,
        plan,
        table,
        [
            {"params": list(model[0].parameters()) + list(model[2].parameters()), "betas": (0.8, 0.9)},
            {"params": model[4].parameters(), "lr": 1e-2, "weight_decay": 0.5, "tag": "head"},
        ],
    )
    head = [g for g in groups if g.get("tag") == "head"]
    assert {tuple(g["hp_classes"]) for g in head} == {("output",), ("vector",)}
    out = next(g for g in head if g["hp_classes"] == ["output"])
    assert out["lr"] == pytest.approx(1e-2 / 4) and out["weight_decay"] == pytest.approx(0.5 * 4)
    assert all(g["betas"] == (0.8, 0.9) for g in groups if "tag" not in g)
    assert sum(len(g["params"]) for g in groups) == 6
    opt = torch.optim.AdamW(groups, lr=plan.base_lr)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [plan.base_lr * g["lr_scale"] for g in groups]
    )


@pytest.mark.parametrize(("optimizer", "cls"), [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_other_optimizers_get_their_own_rules(optimizer: str, cls: type) -> None:
    cfg = replace(KEEP, optimizer=optimizer)
    model = make_mlp(256)
    plan = suggest(cfg, 256)
    table = parametrize(model, plan, make_mlp)
    opt = build_optimizer(model, plan, table)
    assert isinstance(opt, cls)
    lr = {c: next(g["lr"] for g in opt.param_groups if c in g["hp_classes"]) for c in ("vector", "hidden")}
    if optimizer == "sgd":  # muP for SGD: vector-like lr x m, hidden lr unchanged
        assert lr == pytest.approx({"vector": KEEP.lr * 4, "hidden": KEEP.lr})
    else:
        assert lr == pytest.approx({"vector": KEEP.lr, "hidden": KEEP.lr / 4})


def test_sgd_lrs_match_the_mup_package() -> None:
    mup = pytest.importorskip("mup", reason="the mup package (a benchmark peer) is not installed")

    class Net(nn.Module):
        def __init__(self, width: int, readout: type[nn.Module] = nn.Linear) -> None:
            super().__init__()
            self.inp, self.hid = nn.Linear(12, width), nn.Linear(width, width)
            self.out = readout(width, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.hid(torch.relu(self.inp(x)))))

    model = Net(256, mup.MuReadout)
    mup.set_base_shapes(model, Net(64, mup.MuReadout), delta=Net(128, mup.MuReadout))
    theirs = mup.MuSGD(model.parameters(), lr=0.1)
    their_lr = {id(p): g["lr"] for g in theirs.param_groups for p in g["params"]}
    plain = Net(256)
    cfg = replace(KEEP, lr=0.1, optimizer="sgd", readout="multiplier", head_dim=None)
    plan = suggest(cfg, 256)
    ours = build_optimizer(plain, plan, parametrize(plain, plan, Net))
    our_lr = {
        name: g["lr"]
        for g in ours.param_groups
        for name, p in plain.named_parameters()
        if any(p is q for q in g["params"])
    }
    for name, p in model.named_parameters():
        assert our_lr[name] == pytest.approx(their_lr[id(p)]), name
    assert math.isclose(plan["output"].multiplier, 1 / 4)


def test_vit_tables_are_vector_like() -> None:
    table = parametrize(_hf_vit(64), suggest(KEEP, 64), _hf_vit)
    for name in ("vit.embeddings.cls_token", "vit.embeddings.position_embeddings"):
        assert table[name].param_class is ParamClass.VECTOR, table[name].reason
    assert table["vit.embeddings.patch_embeddings.projection.weight"].param_class is ParamClass.VECTOR
    assert table.by_class("output") == ["classifier.weight"]


def test_foreign_benchmark_smoke() -> None:
    pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")
    pytest.importorskip("mup", reason="the mup package (a benchmark peer) is not installed")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "foreign.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--models", "hf-vit"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("foreign models: worst regret at the widest width")


def test_commands_keep_a_factory_models_own_init() -> None:
    """diagnose, tune and sweep train `--model MODULE:FACTORY` with a config that keeps the
    factory's init (the built-in proxies' explicit stds are for the built-in models only)."""
    from hptransfer.diagnostics.api import resolve_model as diagnose_model
    from hptransfer.tuning.builtin import resolve_model as tune_model

    for cfg in (
        diagnose_model("tests.test_user_models:make_mlp", task="regression").config,
        tune_model("tests.test_user_models:make_mlp", task="regression").config,
    ):
        assert (cfg.init_std, cfg.embed_init_std, cfg.output_init_std) == (None, None, None)
        assert cfg.head_dim is None and cfg.n_heads is None
