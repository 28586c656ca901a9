"""The torch adapter on plain user models: classification, groups, init, multipliers."""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from hptransfer import ParamClass, default_config, suggest
from hptransfer.scaling.torch_adapter import (
    ClassificationError,
    adamw,
    apply_init,
    apply_multipliers,
    build_optimizer,
    classify,
    hidden_kind,
    hidden_kinds,
    meta_model,
    param_groups,
    parametrize,
    scaled_lrs,
)

CFG = default_config()


def make_mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
    )


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads=width // 64, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self, width: int, vocab: int = 50, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def test_mlp_classes() -> None:
    table = classify(make_mlp(512), reference=meta_model(make_mlp, 256))
    assert table["0.weight"].param_class is ParamClass.VECTOR  # input layer: fan-in fixed
    assert table["2.weight"].param_class is ParamClass.HIDDEN
    assert table["4.weight"].param_class is ParamClass.OUTPUT
    assert table["4.bias"].param_class is ParamClass.VECTOR
    assert table["2.weight"].width_ratio == 2
    assert table.counts() == {"vector": 4, "hidden": 1, "output": 1}


def test_transformer_classes() -> None:
    table = classify(TinyTransformer(256), reference=meta_model(TinyTransformer, 128))
    hidden = set(table.by_class("hidden"))
    assert {
        "blocks.0.attn.in_proj_weight",
        "blocks.0.attn.out_proj.weight",
        "blocks.1.mlp.0.weight",
        "blocks.1.mlp.2.weight",
    } <= hidden
    assert table.by_class("output") == ["head.weight"]
    assert table["embed.weight"].param_class is ParamClass.VECTOR
    assert all(table[n].param_class is ParamClass.VECTOR for n in table if "norm" in n)
    assert len(table) == len(list(TinyTransformer(128).parameters()))


def test_overrides_win_and_can_replace_the_reference() -> None:
    overrides = {r"^0\.": "vector", r"^2\.weight$": "hidden", r"^4\.weight$": "output"}
    table = classify(make_mlp(64), overrides=overrides)
    assert table["2.weight"].param_class is ParamClass.HIDDEN
    assert table["4.weight"].param_class is ParamClass.OUTPUT
    forced = classify(make_mlp(64), meta_model(make_mlp, 32), overrides={r"^2\.weight$": "output"})
    assert forced["2.weight"].param_class is ParamClass.OUTPUT and forced["2.weight"].reason == "override"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: classify(make_mlp(64)), r"cannot classify 3 matrix parameter\(s\).*reference="),
        (lambda: classify(make_mlp(64), make_mlp(64)), "same shapes"),
        (lambda: classify(make_mlp(64), nn.Linear(3, 3)), "different parameters"),
        (lambda: classify(make_mlp(64), overrides={"(": "hidden"}), "not a regex"),
        (lambda: classify(make_mlp(64), overrides={"0": "matrix"}), "unknown class 'matrix'"),
        (lambda: classify(nn.Conv2d(8, 8, 3), nn.Conv2d(4, 4, 5)), "kernel dimension"),
    ],
)
def test_unclassifiable_models_say_how_to_fix(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClassificationError, match=message):
        call()


def test_param_groups_merge_by_lr_and_wd() -> None:
    plan = suggest(CFG, 1024)
    model = TinyTransformer(1024)
    table = classify(model, meta_model(TinyTransformer, 256))
    groups = param_groups(model, plan, table)
    # hidden and output share (lr, wd) under the default rule: two groups in all
    assert len(groups) == 2
    by_classes = {tuple(g["hp_classes"]): g for g in groups}
    mats = by_classes[("hidden", "output")]
    assert mats["lr"] == pytest.approx(plan["hidden"].lr) == pytest.approx(CFG.lr / 4)
    assert mats["weight_decay"] == pytest.approx(CFG.weight_decay * 4)
    assert by_classes[("vector",)]["weight_decay"] == 0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for g in groups:
        assert g["lr"] == pytest.approx(plan.base_lr * g["lr_scale"])
    opt = adamw(model, plan, table)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]
    assert scaled_lrs(opt, 1.0) == [g["lr_scale"] for g in groups]


def test_frozen_parameters_are_left_out() -> None:
    model = make_mlp(64)
    model[0].weight.requires_grad_(False)
    table = classify(model, meta_model(make_mlp, 32))
    groups = param_groups(model, suggest(CFG, 256), table)
    assert sum(len(g["params"]) for g in groups) == 5


def test_multiplicative_scheduler_keeps_the_rule() -> None:
    plan = suggest(CFG, 1024)
    model = make_mlp(1024)
    table = classify(model, meta_model(make_mlp, 256))
    opt = adamw(model, plan, table)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    for _ in range(3):
        opt.step()
        sched.step()
    ratios = [g["lr"] / (plan.base_lr * g["lr_scale"]) for g in opt.param_groups]
    assert ratios == pytest.approx([0.125] * len(ratios))


def test_init_follows_the_plan_and_is_repeatable() -> None:
    torch.manual_seed(0)
    plan = suggest(CFG, 1024)
    model = make_mlp(1024)
    table = classify(model, meta_model(make_mlp, 256))
    for _ in range(2):  # applying twice must not compound
        apply_init(model, plan, table)
        assert model[2].weight.std().item() == pytest.approx(plan["hidden"].init_std, rel=0.02)
        assert model[2].weight.std().item() == pytest.approx(CFG.init_std / 2, rel=0.02)
        assert model[0].weight.std().item() == pytest.approx(CFG.init_std, rel=0.05)
    assert torch.count_nonzero(model[4].weight) == 0  # zero readout by default
    # biases start at zero (torch's default shrinks with fan-in), for every class
    assert all(torch.count_nonzero(model[i].bias) == 0 for i in (0, 2, 4))


def test_norm_gains_keep_their_init() -> None:
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.Linear(32, 4))
    with torch.no_grad():
        model[1].weight.fill_(1.5)
    table = classify(model, nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4)))
    apply_init(model, suggest(CFG, 512), table)
    assert torch.all(model[1].weight == 1.5) and torch.all(model[1].bias == 0)


def test_readout_multiplier_hook_scales_input_once() -> None:
    cfg = replace(CFG, readout="multiplier", output_init_std=0.02)
    plan = suggest(cfg, 1024)
    assert plan["output"].multiplier == pytest.approx(1 / 4)
    model = make_mlp(1024)
    table = classify(model, meta_model(make_mlp, 256))
    x = torch.randn(3, 16)
    plain = model(x)
    hidden = model[:4](x)
    apply_multipliers(model, plan, table)
    apply_multipliers(model, plan, table)  # re-applying replaces, never compounds
    expected = nn.functional.linear(hidden * 0.25, model[4].weight, model[4].bias)
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert not torch.allclose(model(x), plain)


def test_nothing_is_stored_on_parameters_and_state_dict_round_trips() -> None:
    plan = suggest(CFG, 512)
    model = TinyTransformer(512)
    before = {n: set(vars(p)) for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = parametrize(model, plan, meta_model(TinyTransformer, 256))
    assert {n: set(vars(p)) for n, p in model.named_parameters()} == before
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = TinyTransformer(512)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    # the table still drives an optimizer for the reloaded model and a deep copy
    for m in (clone, copy.deepcopy(model)):
        assert len(param_groups(m, plan, table)) == 2


class SdpaBlock(nn.Module):
    """Attention inside a class whose name says nothing about attention; fixed head count."""

    def __init__(self, width: int, heads: int = 2, scale: float | None = None) -> None:
        super().__init__()
        self.heads, self.scale = heads, scale
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


def _heads_cfg():  # two heads whose size grows with width: muP's 1/d_head differs from SP
    return replace(CFG, head_dim=None, n_heads=2)


def test_attention_check_sees_sdpa_whatever_the_class_name() -> None:
    plan = suggest(_heads_cfg(), 512)  # d_head 256; base 128: scale (1/sqrt(128)) * 128/256
    x = torch.randn(2, 5, 512)
    model = SdpaBlock(512)
    parametrize(model, plan, lambda w: SdpaBlock(w))
    with pytest.warns(
        UserWarning, match=r"attention logits are scaled by 0\.0625 but the plan wants 0\.0441942"
    ):
        model(x)
    with warnings.catch_warnings():  # the check runs once, then its hooks are gone
        warnings.simplefilter("error")
        model(x)
        ok = SdpaBlock(512, scale=plan.attention_scale)
        parametrize(ok, plan, lambda w: SdpaBlock(w), example_inputs=(x,))  # checked now: silent
        ignored = SdpaBlock(512)
        parametrize(ignored, plan, lambda w: SdpaBlock(w), attention="ignore")
        ignored(x)
        # head size fixed as width grows: muP's scale is SP's 1/sqrt(d_head), nothing to warn
        fixed = SdpaBlock(512, heads=8)
        parametrize(fixed, suggest(replace(CFG, head_dim=64), 512), lambda w: SdpaBlock(w, heads=w // 64))
        fixed(x)


def test_attention_apply_rewrites_the_scale() -> None:
    plan = suggest(_heads_cfg(), 512)
    x = torch.randn(2, 5, 512)
    model, wanted = SdpaBlock(512), SdpaBlock(512, scale=plan.attention_scale)
    wanted.load_state_dict(model.state_dict())
    parametrize(model, plan, lambda w: SdpaBlock(w), attention="apply", init=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.allclose(model(x), wanted(x), atol=1e-6)
        assert torch.allclose(model(x), wanted(x), atol=1e-6)  # every forward, not just the first


def test_attention_written_by_hand_is_named() -> None:
    class ByHand(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.q = nn.Linear(width, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = self.q(x).unsqueeze(1)
            return (q @ q.transpose(-1, -2)).softmax(-1) @ q

    model = ByHand(256)
    parametrize(model, suggest(_heads_cfg(), 256), ByHand)
    with pytest.warns(UserWarning, match="computes attention by hand"):
        model(torch.randn(2, 5, 256))


def test_mup_training_step_is_width_stable() -> None:
    """One Adam step under the plan moves hidden pre-activations by a width-independent amount
    (the point of muP); under SP the move grows with width."""

    def delta(width: int, rule: str) -> float:
        torch.manual_seed(0)
        plan = suggest(replace(CFG, output_init_std=0.02), width, rule)  # gradients must flow
        model = make_mlp(width)
        table = parametrize(model, plan, make_mlp)
        opt = adamw(model, plan, table)
        x = torch.randn(64, 16)
        before = model[:3](x).detach()
        model(x).pow(2).mean().backward()
        opt.step()
        return (model[:3](x).detach() - before).abs().mean().item()

    mup_ratio = delta(2048, "mup") / delta(256, "mup")
    sp_ratio = delta(2048, "sp") / delta(256, "sp")
    assert 0.5 < mup_ratio < 2.0
    assert sp_ratio > 4.0
    assert math.isfinite(mup_ratio)


# -- attention vs MLP weight decay, Adam epsilon per group ---------------------------------------


def _wd_by_name(model: nn.Module, groups: list[dict]) -> dict[str, float]:  # type: ignore[type-arg]
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {name_of[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}


def test_hidden_kind_reads_common_names_as_the_calibration_does() -> None:
    from hptransfer.diagnostics import component

    cases = {
        "model.layers.0.self_attn.q_proj.weight": "attention",
        "model.layers.0.mlp.down_proj.weight": "mlp",
        "transformer.h.0.attn.c_attn.weight": "attention",
        "transformer.h.0.attn.c_proj.weight": "attention",
        "transformer.h.0.mlp.c_proj.weight": "mlp",
        "vit.layers.0.attention.o_proj.weight": "attention",
        "vit.encoder.layer.0.attention.output.dense.weight": "attention",
        "vit.encoder.layer.0.intermediate.dense.weight": "mlp",
        "vit.encoder.layer.0.output.dense.weight": None,  # BERT-style: the name does not say
        "encoder.block.0.layer.1.DenseReluDense.wo.weight": "mlp",
        "layers.0.attention.wo.weight": "attention",
        "layers.0.feed_forward.w2.weight": "mlp",
        "blocks.0.attn.in_proj_weight": "attention",
        "blocks.0.mlp.0.weight": "mlp",
        "blocks.1.attn.q.weight": "attention",
        "blocks.1.mlp.gate.weight": "mlp",
        "_orig_mod.module.blocks.1.attn.o.weight": "attention",
        "2.weight": None,
        "blocks.0.proj.weight": None,
    }
    assert {n: hidden_kind(n) for n in cases} == cases
    # the per-component wd calibration reads names the same way (its exponents land where it measured)
    assert all(component(n, "hidden") == (k or "other") for n, k in cases.items())


def test_attention_and_mlp_matrices_get_their_own_weight_decay() -> None:
    from hptransfer.models import TinyLlama

    def make(width: int) -> nn.Module:
        return TinyLlama(width, vocab_size=40, depth=2, head_dim=8)

    base = replace(CFG, base_width=32, head_dim=8)
    plan = suggest(replace(base, wd_exponents={"attention": 0.5, "mlp": 1.5}), 128)  # m = 4
    model = make(128)
    table = parametrize(model, plan, reference=make, attention="ignore")
    kinds = hidden_kinds(table)
    assert {k for n, k in kinds.items() if ".attn." in n} == {"attention"}
    assert {k for n, k in kinds.items() if ".mlp." in n} == {"mlp"}
    groups = param_groups(model, plan, table)
    wd = _wd_by_name(model, groups)
    att, mlp = plan.weight_decay_for("hidden", "attention"), plan.weight_decay_for("hidden", "mlp")
    assert att == pytest.approx(CFG.weight_decay * 2) and mlp == pytest.approx(CFG.weight_decay * 8)
    assert all(wd[n] == att for n, k in kinds.items() if k == "attention")
    assert all(wd[n] == mlp for n, k in kinds.items() if k == "mlp")
    assert {tuple(g["hp_kinds"]) for g in groups if "hidden" in g["hp_classes"]} == {
        ("hidden.attention",),
        ("hidden.mlp",),
    }
    # a user group's base wd is carried the same way
    user = param_groups(model, plan, table, [{"params": list(model.parameters()), "weight_decay": 0.2}])
    assert _wd_by_name(model, user)["blocks.0.attn.q.weight"] == pytest.approx(0.4)
    assert _wd_by_name(model, user)["blocks.0.mlp.up.weight"] == pytest.approx(1.6)
    # without per-class exponents the two kinds share one group
    same = param_groups(model, suggest(base, 128), table)
    hidden = [g for g in same if "hidden" in g["hp_classes"]]
    assert len(hidden) == 1 and sorted(hidden[0]["hp_kinds"]) == ["hidden.attention", "hidden.mlp"]


def test_hf_llama_attention_and_mlp_weight_decay() -> None:
    transformers = pytest.importorskip("transformers")

    def make(width: int) -> nn.Module:
        config = transformers.LlamaConfig(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=1,
            num_attention_heads=width // 16,
            num_key_value_heads=width // 16,
            vocab_size=50,
        )
        return transformers.LlamaForCausalLM(config)

    cfg = replace(CFG, base_width=32, head_dim=16, wd_exponents={"attention": 0.0}, depth_rule="none")
    plan = suggest(cfg, 64)
    model = make(64)
    table = parametrize(model, plan, reference=make, attention="ignore")
    kinds = hidden_kinds(table)
    assert len(kinds) == 7 and list(kinds.values()).count("attention") == 4
    wd = _wd_by_name(model, build_optimizer(model, plan, table).param_groups)
    assert wd["model.layers.0.self_attn.k_proj.weight"] == pytest.approx(CFG.weight_decay)  # e = 0
    assert wd["model.layers.0.mlp.gate_proj.weight"] == pytest.approx(CFG.weight_decay * 2)  # rule's e = 1


def test_adam_epsilon_reaches_torch_per_group() -> None:
    plan = suggest(replace(CFG, eps=1e-3, scale_eps=True), 1024)  # m = 4
    model = make_mlp(1024)
    table = classify(model, meta_model(make_mlp, 256))
    opt = build_optimizer(model, plan, table)
    eps = {tuple(g["hp_classes"]): g["eps"] for g in opt.param_groups}
    assert eps[("hidden",)] == pytest.approx(plan["hidden"].eps) == pytest.approx(1e-3 / 4)
    assert eps[("vector",)] == pytest.approx(plan["vector"].eps)
    # torch used it: Adam's first step is lr * g / (|g| + eps)
    before = model[2].weight.detach().clone()
    model(torch.randn(8, 16)).pow(2).mean().backward()
    g = model[2].weight.grad.clone()
    opt.step()
    h = plan["hidden"]
    want = before * (1 - h.lr * h.weight_decay) - h.lr * g / (g.abs() + h.eps)
    torch.testing.assert_close(model[2].weight.detach(), want, rtol=1e-5, atol=1e-8)
    # a config eps other than torch's default reaches torch without scale_eps too
    plain = param_groups(model, suggest(replace(CFG, eps=1e-6), 1024), table)
    assert {g["eps"] for g in plain} == {1e-6}
    assert all("eps" not in g for g in param_groups(model, suggest(CFG, 1024), table))
