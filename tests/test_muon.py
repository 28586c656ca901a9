"""Muon for hidden matrices, AdamW for the rest, as one optimizer (issue 15)."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hptransfer import ProxyConfig, suggest
from hptransfer.scaling.torch_adapter import build_optimizer, param_groups, parametrize, scaled_lrs
from hptransfer.scaling.torch_optim import MuonAdamW

VOCAB, SEQ, ROWS = 24, 8, 4


class TinyLM(nn.Module):
    """Embedding, one attention block (qkv), one MLP block, an untied readout."""

    def __init__(self, width: int, n_heads: int = 2) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.embed = nn.Embedding(VOCAB, width)
        self.attn = nn.ModuleDict(
            {"qkv": nn.Linear(width, 3 * width, bias=False), "o": nn.Linear(width, width)}
        )
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.ModuleDict({"up": nn.Linear(width, 2 * width), "down": nn.Linear(2 * width, width)})
        self.head = nn.Linear(width, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, t = idx.shape
        x = self.embed(idx)
        q, k, v = self.attn["qkv"](x).view(b, t, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn["o"](a.transpose(1, 2).reshape(b, t, -1))
        x = x + self.mlp["down"](F.gelu(self.mlp["up"](self.norm(x))))
        return self.head(x)


def batch(step: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (ROWS, SEQ), generator=torch.Generator().manual_seed(1000 + step))


def lm_loss(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    logits = model(idx)
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), idx[:, 1:].reshape(-1))


def run(model: nn.Module, opt: torch.optim.Optimizer, steps: range, sched: Any = None) -> list[torch.Tensor]:
    losses = []
    for step in steps:
        loss = lm_loss(model, batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.detach().clone())
    return losses


# -- MuonAdamW on its own ----------------------------------------------------------------------


def _two_groups(model: nn.Sequential) -> list[dict[str, Any]]:
    return [
        {"params": [model[1].weight], "use_muon": True, "lr": 0.02},
        {"params": [model[0].weight, model[0].bias, model[1].bias], "lr": 1e-3, "weight_decay": 0.1},
    ]


def test_one_optimizer_two_algorithms() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Linear(32, 16))
    opt = MuonAdamW(_two_groups(model))
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    # the same group dicts: what a scheduler writes reaches the optimizer that steps them
    assert muon.param_groups[0] is opt.param_groups[0] and adamw.param_groups[0] is opt.param_groups[1]
    assert muon.state is opt.state is adamw.state
    hidden = model[1].weight
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    u, _, vh = torch.linalg.svd(hidden.grad, full_matrices=False)
    hidden.grad = u @ torch.diag(torch.logspace(0, 1, 16)) @ vh  # singular values 1 .. 10
    opt.step()
    # Muon's update is orthogonalised: Newton–Schulz leaves its singular values within about
    # [0.5, 1.5] of each other, where the gradient's spread 10x.
    sv = torch.linalg.svdvals(hidden.detach() - before["1.weight"])
    assert float(sv.max() / sv.min()) < 2.5
    # ... with spectral norm about lr (adjust_lr_fn "original": 16x32 is wider than tall, factor 1)
    assert 0.5 * 0.02 < float(sv.max()) < 1.5 * 0.02
    # AdamW's first step is lr * sign(grad) (plus decoupled decay lr * wd * p)
    w0 = model[0].weight
    want = before["0.weight"] * (1 - 1e-3 * 0.1) - 1e-3 * torch.sign(w0.grad)
    torch.testing.assert_close(w0.detach(), want, rtol=0, atol=1e-6)
    assert set(opt.state[hidden]) == {"momentum_buffer"}
    assert set(opt.state[model[0].weight]) == {"step", "exp_avg", "exp_avg_sq"}


def test_muon_groups_take_only_matrices() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8))
    with pytest.raises(ValueError, match=r"2-D parameters only.*AdamW group"):
        MuonAdamW([{"params": [model[0].bias], "use_muon": True}])
    opt = MuonAdamW([{"params": [model[1].weight], "use_muon": True}])
    assert opt.adamw is None
    opt.add_param_group({"params": [model[0].weight, model[0].bias, model[1].bias], "lr": 0.1})
    assert opt.adamw is not None and opt.adamw.param_groups[0] is opt.param_groups[1]
    assert opt.adamw.state is opt.state
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [model[0].bias]})
    with pytest.raises(TypeError, match="param groups"):
        MuonAdamW(model.parameters())  # type: ignore[arg-type]


@pytest.mark.parametrize("cycle_momentum", [True, False])
def test_schedulers_reach_both_optimizers(cycle_momentum: bool) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8))
    opt = MuonAdamW(_two_groups(model))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.muon.param_groups] == pytest.approx([0.02 / 8])  # type: ignore[union-attr]
    assert [g["lr"] for g in opt.adamw.param_groups] == pytest.approx([1e-3 / 8])  # type: ignore[union-attr]
    opt = MuonAdamW(_two_groups(model))
    one = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[0.02, 1e-3], total_steps=10, cycle_momentum=cycle_momentum
    )
    for _ in range(5):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        one.step()
    muon_group, adam_group = opt.param_groups
    assert muon_group["lr"] / adam_group["lr"] == pytest.approx(20)
    assert adam_group["betas"] == (0.9, 0.999)  # AdamW's betas are never cycled
    assert (muon_group["momentum"] < 0.95) is cycle_momentum  # Muon's momentum is


# -- through the plan ---------------------------------------------------------------------------

CFG = ProxyConfig(
    base_width=16, n_heads=2, lr=2.0**-6, weight_decay=0.1, optimizer="muon", hidden_lr_mult=2.0
)
WIDTH = 32
PLAN = suggest(CFG, WIDTH)


def make(seed: int = 0, plan: Any = PLAN) -> tuple[TinyLM, Any]:
    torch.manual_seed(seed)
    model = TinyLM(WIDTH)
    return model, parametrize(model, plan, reference=TinyLM, attention="ignore")


def test_muon_plan_builds_one_optimizer_with_the_plans_numbers() -> None:
    model, table = make()
    opt = build_optimizer(model, PLAN, table)
    assert isinstance(opt, MuonAdamW)
    muon, adamw = opt.optimizers
    hidden = {id(p) for n, p in model.named_parameters() if table[n].param_class == "hidden"}
    assert hidden == {id(p) for g in muon.param_groups for p in g["params"]}
    assert len(hidden) == 4 and all(g["adjust_lr_fn"] == "original" for g in muon.param_groups)
    assert all("hidden" not in g["hp_classes"] for g in adamw.param_groups)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(PLAN.base_lr * g["lr_scale"])
    lr = {tuple(g["hp_classes"]): g["lr"] for g in opt.param_groups}
    # Muon's hidden lr does not shrink with width ("original"); AdamW's readout does (lr/m)
    assert lr[("hidden",)] == pytest.approx(PLAN["hidden"].lr) == pytest.approx(CFG.lr * 2.0)
    assert lr[("output",)] == pytest.approx(CFG.lr / 2) and lr[("vector",)] == pytest.approx(CFG.lr)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = lm_loss(model, batch(0))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    delta = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    # Muon: spectral norm of the update ~ lr * sqrt(max(1, fan_out/fan_in)) (qkv: 3x), after the
    # decoupled decay lr*wd*p that comes first
    h = PLAN["hidden"]
    for name, factor in (("attn.qkv.weight", math.sqrt(3)), ("attn.o.weight", 1.0)):
        step = delta[name] + h.lr * h.weight_decay * before[name]
        sv = torch.linalg.svdvals(step)
        assert 0.5 < float(sv.max()) / (h.lr * factor) < 1.5, name
    # AdamW's first step on the readout: lr * g/(|g| + eps), after the decoupled decay
    out = PLAN["output"]
    want = (
        -out.lr * grads["head.weight"] / (grads["head.weight"].abs() + 1e-8)
        - out.lr * out.weight_decay * before["head.weight"]
    )
    torch.testing.assert_close(delta["head.weight"], want, rtol=1e-4, atol=1e-7)


def test_lambda_lr_scales_muon_and_adamw_groups() -> None:
    model, table = make()
    opt = build_optimizer(model, PLAN, table)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    run(model, opt, range(3), sched)
    for inner in opt.optimizers:  # type: ignore[attr-defined]
        for g in inner.param_groups:
            assert g["lr"] == pytest.approx(PLAN.base_lr * g["lr_scale"] * 0.125)
    assert scaled_lrs(opt, 1.0) == [g["lr_scale"] for g in opt.param_groups]


def test_state_dict_round_trip_continues_bit_for_bit() -> None:
    """Save model + MuonAdamW mid-run (weights_only load), rebuild from a fresh model, continue:
    the same losses and parameters as an uninterrupted run, bit for bit."""
    whole, table = make()
    want = run(whole, build_optimizer(whole, PLAN, table), range(6))

    first, first_table = make()
    opt = build_optimizer(first, PLAN, first_table)
    head = run(first, opt, range(3))
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert sorted({g["use_muon"] for g in saved["optim"]["param_groups"]}) == [False, True]

    torch.manual_seed(123)  # another init: everything must come from the file
    fresh = TinyLM(WIDTH)
    fresh.load_state_dict(saved["model"])
    fresh_table = parametrize(fresh, PLAN, reference=TinyLM, init=False, attention="ignore")
    fresh_opt = build_optimizer(fresh, PLAN, fresh_table)
    fresh_opt.load_state_dict(saved["optim"])
    assert fresh_opt.muon.state is fresh_opt.state  # type: ignore[attr-defined]
    tail = run(fresh, fresh_opt, range(3, 6))
    assert torch.equal(torch.stack(head + tail), torch.stack(want))
    for (name, a), b in zip(fresh.named_parameters(), whole.parameters()):
        assert torch.equal(a, b), name


def test_a_state_dict_from_other_groups_is_refused() -> None:
    model, table = make()
    opt = build_optimizer(model, PLAN, table)
    state = opt.state_dict()
    for g in state["param_groups"]:
        g["use_muon"] = not g["use_muon"]
    with pytest.raises(ValueError, match="other groups to Muon"):
        opt.load_state_dict(state)


class ConvNet(nn.Module):
    """A hidden 3x3 conv kernel (4-D: torch's Muon refuses it) between two linear layers."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, width, 1)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, width)
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.inp(x)).mean((2, 3))
        return self.out(torch.relu(self.fc(h)))


def test_hidden_kernels_that_are_not_matrices_stay_with_adamw() -> None:
    plan = suggest(replace(CFG, n_heads=None), 64)  # m = 4
    model = ConvNet(64)
    table = parametrize(model, plan, reference=ConvNet)
    assert table["conv.weight"].param_class == "hidden"
    with pytest.warns(UserWarning, match=r"1 hidden parameter\(s\) are not 2-D \(conv.weight\)"):
        groups = param_groups(model, plan, table)
    conv = next(g for g in groups if any(p is model.conv.weight for p in g["params"]))
    fc = next(g for g in groups if any(p is model.fc.weight for p in g["params"]))
    assert fc["use_muon"] and not conv["use_muon"]
    # AdamW's width rule for the kernel: lr/m and wd*m (Muon's matrix: lr and wd unchanged)
    assert conv["lr"] == pytest.approx(fc["lr"] / 4) and conv["weight_decay"] == pytest.approx(
        fc["weight_decay"] * 4
    )
    with pytest.warns(UserWarning, match="not 2-D"):
        opt = build_optimizer(model, plan, table)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()  # torch's Muon would raise on a 4-D parameter
    # with scale_eps the kernel takes AdamW's hidden epsilon too (eps/m), not Muon's row's
    scaled = suggest(replace(CFG, n_heads=None, scale_eps=True), 64)
    adamw_plan = suggest(replace(CFG, n_heads=None, scale_eps=True, optimizer="adamw"), 64)
    with pytest.warns(UserWarning, match="not 2-D"):
        groups = param_groups(model, scaled, table)
    conv = next(g for g in groups if any(p is model.conv.weight for p in g["params"]))
    assert conv["eps"] == pytest.approx(adamw_plan["hidden"].eps) and adamw_plan["hidden"].eps < CFG.eps


def test_an_adjust_lr_fn_other_than_the_plans_is_refused() -> None:
    plan = suggest(CFG, 64)
    model = TinyLM(64)
    table = parametrize(model, plan, reference=TinyLM, attention="ignore")
    with pytest.raises(
        ValueError, match="adjust_lr_fn='match_rms_adamw' but the plan's hidden lr is for 'original'"
    ):
        build_optimizer(model, plan, table, adjust_lr_fn="match_rms_adamw")
    assert build_optimizer(model, plan, table, adjust_lr_fn=None).param_groups  # None is torch's "original"


def test_gpt2_conv1d_weights_get_muons_shape_factor_the_right_way_round() -> None:
    """HF Conv1D stores (in, out); torch Muon's "original" factor reads (out, in): the groups
    correct it, so c_attn's update has spectral norm ~ lr*sqrt(3), c_fc's ~ lr*2, mlp.c_proj's ~ lr."""
    transformers = pytest.importorskip("transformers")

    def make_gpt2(width: int) -> nn.Module:
        config = transformers.GPT2Config(n_embd=width, n_layer=1, n_head=2, vocab_size=VOCAB, n_positions=SEQ)
        return transformers.GPT2LMHeadModel(config)

    plan = suggest(CFG, WIDTH)
    torch.manual_seed(0)
    model = make_gpt2(WIDTH)
    table = parametrize(model, plan, reference=make_gpt2, attention="ignore")
    opt = build_optimizer(model, plan, table)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    idx = batch(0)
    model(idx, labels=idx).loss.backward()
    opt.step()
    h = plan["hidden"]
    expected = {"attn.c_attn": math.sqrt(3), "attn.c_proj": 1.0, "mlp.c_fc": 2.0, "mlp.c_proj": 1.0}
    for name, p in model.named_parameters():
        key = next((k for k in expected if name.endswith(f"{k}.weight")), None)
        if key is None:
            continue
        step = p.detach() - before[name] + h.lr * h.weight_decay * before[name]
        ratio = float(torch.linalg.svdvals(step).max()) / (h.lr * expected[key])
        assert 0.5 < ratio < 1.5, (name, ratio)


def test_adam_eps_goes_to_adamw_groups_only() -> None:
    plan = suggest(replace(CFG, eps=1e-6, scale_eps=True), 64)  # m = 4
    model = TinyLM(64)
    table = parametrize(model, plan, reference=TinyLM, attention="ignore")
    opt = build_optimizer(model, plan, table)
    for g in opt.param_groups:
        if g["use_muon"]:
            assert g["eps"] == 1e-7  # Muon's Newton–Schulz clamp, torch's default, not Adam's
        else:
            (cls,) = g["hp_classes"]
            assert g["eps"] == pytest.approx(plan[cls].eps)
    assert {g["eps"] for g in opt.param_groups if not g["use_muon"]} == {
        plan["vector"].eps,
        plan["output"].eps,
    }


def test_the_training_loop_trains_with_the_plans_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    import hptransfer.training as training

    built: list[torch.optim.Optimizer] = []
    real = training.build_optimizer

    def spy(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(training, "build_optimizer", spy)
    cfg = ProxyConfig(base_width=16, head_dim=8, lr=2.0**-6, optimizer="muon", init_std=0.1)
    res = training.train_proxy(
        "charlm",
        32,
        cfg,
        steps=3,
        batch_size=2,
        model_kwargs={"depth": 1, "head_dim": 8, "seq_len": 16},
        data_kwargs={"val_sequences": 4},
    )
    assert not res.diverged and len(res.train_losses) == 3
    (opt,) = built
    assert isinstance(opt, MuonAdamW) and opt.muon is not None
    assert all(len(opt.state[p]) for g in opt.muon.param_groups for p in g["params"])  # Muon stepped them
