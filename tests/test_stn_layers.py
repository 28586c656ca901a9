import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hptransfer.stn.layers import HyperContext, StnConv2d, StnEmbedding, StnLinear, to_stn

torch.set_num_threads(1)  # the machine's 2 cores are shared


def test_linear_equals_plain_with_effective_weights() -> None:
    torch.manual_seed(0)
    ctx = HyperContext(3)
    layer = StnLinear(5, 4, ctx, gate_std=0.5)
    ctx.h = torch.tensor([0.3, -1.0, 0.7])
    x = torch.randn(6, 5)
    g = layer.gate.detach() @ ctx.h
    # the paper's form: (W_e x + b_e) + g[:out] * (W_h x) + g[out:] * b_h
    want = F.linear(x, layer.weight, layer.bias) + g[:4] * F.linear(x, layer.hweight) + g[4:] * layer.hbias
    assert torch.allclose(layer(x), want, atol=1e-6)
    plain = nn.Linear(5, 4)
    with torch.no_grad():
        plain.weight.copy_(layer.weight + g[:4, None] * layer.hweight)
        plain.bias.copy_(layer.bias + g[4:] * layer.hbias)
    assert torch.allclose(layer(x), plain(x), atol=1e-6)


def test_conv_and_embedding_equal_plain_with_effective_weights() -> None:
    torch.manual_seed(1)
    ctx = HyperContext(2)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2)
    sconv = StnConv2d(conv, ctx, gate_std=0.5)
    ctx.h = torch.tensor([0.5, -0.2])
    x = torch.randn(2, 3, 8, 8)
    g = sconv.gate.detach() @ ctx.h
    w = sconv.weight + g[:4, None, None, None] * sconv.hweight
    b = sconv.bias + g[4:] * sconv.hbias
    assert torch.allclose(sconv(x), F.conv2d(x, w, b, stride=2, padding=1), atol=1e-5)
    emb = StnEmbedding(nn.Embedding(7, 4), ctx, gate_std=0.5)
    idx = torch.tensor([[0, 3, 6]])
    ge = emb.gate.detach() @ ctx.h
    assert torch.allclose(emb(idx), F.embedding(idx, emb.weight + ge * emb.hweight), atol=1e-6)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 3))


@pytest.mark.parametrize("delta", [False, True])
def test_converted_model_matches_plain(delta: bool) -> None:
    torch.manual_seed(2)
    plain = _mlp().eval()
    stn = to_stn(plain, n_hyper=2, delta=delta).eval()
    x = torch.randn(5, 6)
    stn.ctx.h = None
    assert torch.allclose(stn(x), plain(x), atol=1e-6)
    stn.ctx.h = torch.zeros(2)  # unperturbed (STN at h=0, Delta-STN at eps=0)
    assert torch.allclose(stn(x), plain(x), atol=1e-6)
    stn.ctx.h = torch.tensor([0.4, -0.3])
    moved = not torch.allclose(stn(x), plain(x), atol=1e-6)
    assert moved is (not delta)  # Delta-STN's response starts at zero
    # export: a plain model carrying the effective weights at h gives the same outputs
    h = torch.tensor([0.4, -0.3])
    with torch.no_grad():
        for layer in stn.stn_layers().values():
            layer.gate.normal_(std=0.3)
    stn.ctx.h = h
    exported = stn.export_plain(plain, h).eval()
    assert torch.allclose(exported(x), stn(x), atol=1e-5)


def test_gradients_reach_hyperparameters_through_gates() -> None:
    torch.manual_seed(3)
    stn = to_stn(_mlp(), n_hyper=2)
    u = torch.zeros(2, requires_grad=True)
    stn.ctx.h = torch.tanh(u + 0.1)
    loss = stn(torch.randn(8, 6)).pow(2).mean()
    (gu,) = torch.autograd.grad(loss, u)
    assert gu.abs().min() > 0


def test_dropout_rate_from_context() -> None:
    stn = to_stn(_mlp(), n_hyper=1)
    (path,) = stn.dropouts()
    drop = stn.dropouts()[path]
    x = torch.ones(1000)
    stn.train()
    stn.ctx.rates = {path: 0.8}
    frac = float((drop(x) == 0).float().mean())
    assert 0.72 < frac < 0.88
    stn.eval()
    assert torch.equal(drop(x), x)


def test_no_layers_refused() -> None:
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        to_stn(nn.Sequential(nn.ReLU()), n_hyper=1)


def test_fused_weight_decay_gradient_equals_explicit_l2() -> None:
    torch.manual_seed(4)
    grads = []
    for fused in (True, False):
        torch.manual_seed(5)
        ctx = HyperContext(2)
        layer = StnLinear(5, 3, ctx, gate_std=0.5)
        u = torch.tensor([0.3, -0.2], requires_grad=True)
        ctx.h = torch.tanh(u)
        x = torch.randn(4, 5)
        if fused:
            layer.l2_coef = 0.7
            loss = layer(x).pow(2).sum()
        else:
            w, _ = layer.effective()
            loss = layer(x).pow(2).sum() + 0.35 * (w * w).sum()
        loss.backward()
        grads.append([p.grad.clone() for p in (layer.weight, layer.hweight, layer.gate, u)])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_per_example_gates_match_the_folded_layer_row_by_row() -> None:
    from hptransfer.stn.layers import to_stn

    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Embedding(11, 8), nn.Flatten(), nn.Linear(24, 6), nn.ReLU(), nn.Dropout(0.0), nn.Linear(6, 3)
    )
    net = to_stn(plain, n_hyper=2)
    idx = torch.randint(0, 11, (4, 3))
    h = torch.randn(4, 2)
    net.ctx.h = h  # one perturbation per example
    batched = net(idx)
    for i in range(4):
        net.ctx.h = h[i]  # the folded single-perturbation path
        assert torch.allclose(batched[i], net(idx[i : i + 1])[0], atol=1e-5)
    conv = to_stn(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1)), n_hyper=1)
    x, hc = torch.randn(2, 2, 5, 5), torch.randn(2, 1)
    conv.ctx.h = hc
    both = conv(x)
    conv.ctx.h = hc[1]
    assert torch.allclose(both[1], conv(x[1:])[0], atol=1e-5)


def test_per_example_tuner_step_runs_and_moves_the_hyperparameters() -> None:
    from hptransfer.stn import HyperSpec, StnConfig, StnTuner, TensorBatches

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 2, (64,), generator=g)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    specs = [
        HyperSpec("dropout", 0.2, 0.0, 0.9),
        HyperSpec("l2", 1e-3, 1e-6, 1.0),
        HyperSpec("weight_decay", 0.1, 1e-3, 10.0),
        HyperSpec("input_noise", 0.1, 1e-3, 1.0),
        HyperSpec("label_smoothing", 0.05, 0.0, 0.3),
    ]
    tuner = StnTuner(model, specs, config=StnConfig(per_example=True, warmup_steps=4, checkpoint_every=0))
    res = tuner.fit(TensorBatches(x, y, 16), TensorBatches(x, y, 16), steps=30)
    assert res.val_steps > 0 and all(math.isfinite(v) for v in res.values.values())
    assert res.values != {s.name: s.init for s in specs}


@pytest.mark.parametrize("kind", ["linear", "linear_nobias", "conv", "embedding"])
def test_one_node_layer_matches_the_composite_graph_exactly(kind: str) -> None:
    """The fused forward/backward (_GatedLayer), weight-decay gradient included, gives the same
    numbers as the composite path (gate matvec, slices, addcmul, an explicit L2 term), which a
    plain scale of exactly 1 forces."""
    results = []
    for composite in (False, True):
        torch.manual_seed(7)
        ctx = HyperContext(3)
        layer: nn.Module
        if kind == "conv":
            layer = StnConv2d(nn.Conv2d(2, 4, 3, padding=1), ctx, gate_std=0.5)
            x: torch.Tensor = torch.randn(3, 2, 6, 6)
        elif kind == "embedding":
            layer = StnEmbedding(nn.Embedding(9, 5), ctx, gate_std=0.5)
            x = torch.randint(0, 9, (3, 4))
        else:
            layer = StnLinear(6, 4, ctx, bias=kind == "linear", gate_std=0.5)
            x = torch.randn(3, 6)
        u = torch.tensor([0.3, -0.8, 1.1], requires_grad=True)
        ctx.h = torch.tanh(u)
        ctx.scale = torch.tensor(1.0) if composite else None
        layer.l2_coef = 0.0 if composite else 0.3
        out = layer(x)
        loss = (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
        if composite:
            loss = loss + 0.15 * layer._last[2].pow(2).sum()
        loss.backward()
        params = [
            p for p in (layer.weight, layer.bias, layer.hweight, layer.hbias, layer.gate) if p is not None
        ]
        results.append([out.detach()] + [p.grad for p in params] + [u.grad])
    for fused, comp in zip(*results):
        assert fused is not None and comp is not None
        assert torch.allclose(fused, comp, rtol=1e-6, atol=1e-7)
