"""Depth rules on the torch side: residual-branch multipliers (hooks on a user model, built into
the built-in llama), block detection and its errors, per-group depth factors and Adam epsilon,
torch.compile, state_dict."""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn

from hptransfer import ProxyConfig, suggest
from hptransfer.models import TinyLlama, build_model, builtin_config
from hptransfer.scaling import ConfigError
from hptransfer.scaling.torch_adapter import (
    ClassificationError,
    find_residual_branches,
    param_groups,
    parametrize,
)

BASE_DEPTH = 2
KEEP = ProxyConfig(base_width=32, head_dim=16, lr=2.0**-7, weight_decay=0.1, base_depth=BASE_DEPTH)


def cfg(depth_rule: str, **kw: Any) -> ProxyConfig:
    return replace(KEEP, depth_rule=depth_rule, **kw)


class Attn(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, c // 16, 16).transpose(1, 2) for z in self.c_attn(x).split(c, dim=2))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / 16)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(nn.functional.gelu(self.c_fc(x)))


class Block(nn.Module):
    """nanoGPT-style pre-LN block with biases (Linear c_proj in attention and MLP)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = Attn(width), Mlp(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self, width: int, depth: int, vocab: int = 48) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.h = nn.ModuleList(Block(width) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for block in self.h:
            x = block(x)
        return self.head(self.ln_f(x))


def gpt(depth: int) -> Callable[[int], nn.Module]:
    return lambda w: TinyGPT(w, depth)


def hf_llama(depth: int) -> Callable[[int], nn.Module]:
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")

    def make(width: int) -> nn.Module:
        return transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                vocab_size=48,
                hidden_size=width,
                intermediate_size=3 * width,
                num_hidden_layers=depth,
                num_attention_heads=width // 16,
                num_key_value_heads=width // 16,
                head_dim=16,
                max_position_embeddings=32,
                tie_word_embeddings=False,
            )
        )

    return make


def hf_gpt2(depth: int) -> Callable[[int], nn.Module]:
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra 'foreign')")

    def make(width: int) -> nn.Module:
        return transformers.GPT2LMHeadModel(
            transformers.GPT2Config(
                vocab_size=48,
                n_embd=width,
                n_layer=depth,
                n_head=width // 16,
                n_positions=32,
                bos_token_id=0,
                eos_token_id=0,
            )
        )

    return make


FACTORIES: dict[str, Callable[[int], Callable[[int], nn.Module]]] = {
    "tinygpt": gpt,
    "hf-llama": hf_llama,
    "hf-gpt2": hf_gpt2,
}
#: Where each model's residual branches end (weight and, when there is one, bias get the factor).
BRANCH_OUTPUTS = {
    "tinygpt": ("attn.c_proj", "mlp.c_proj"),
    "hf-llama": ("self_attn.o_proj", "mlp.down_proj"),
    "hf-gpt2": ("attn.c_proj", "mlp.c_proj"),
}


def ids() -> torch.Tensor:
    return torch.randint(0, 48, (2, 12), generator=torch.Generator().manual_seed(1))


def out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = model(x)
    return y if isinstance(y, torch.Tensor) else y.logits


def scaled_copy(model: nn.Module, suffixes: tuple[str, ...], factor: float) -> nn.Module:
    """The same model with the branch-output projections' weights and biases times ``factor``."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in twin.named_modules():
            if name.endswith(suffixes):
                for p in module.parameters(recurse=False):
                    p.mul_(factor)
    return twin


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize(("rule", "alpha"), [("completep", 1.0), ("depth-mup", 0.5)])
def test_hooks_scale_exactly_the_branch_outputs(name: str, rule: str, alpha: float) -> None:
    depth = 8
    factory = FACTORIES[name](depth)
    plan = suggest(cfg(rule), 32, depth=depth)
    assert plan.residual_multiplier == pytest.approx((depth / BASE_DEPTH) ** -alpha)
    torch.manual_seed(0)
    model = factory(32).eval()
    want = scaled_copy(model, BRANCH_OUTPUTS[name], plan.residual_multiplier)
    unscaled = out(model, ids())
    parametrize(model, plan, factory, attention="ignore")
    got = out(model, ids())
    torch.testing.assert_close(got, out(want, ids()), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, unscaled, atol=1e-3)  # the multiplier did something
    # Re-parametrizing replaces the hooks: the multiplier never compounds.
    parametrize(model, plan, factory, init=False, attention="ignore")
    torch.testing.assert_close(out(model, ids()), got)


@pytest.mark.parametrize("name", ["builtin", *FACTORIES])
@pytest.mark.parametrize("rule", ["completep", "depth-mup"])
def test_identity_at_the_base_depth(name: str, rule: str) -> None:
    """At the base depth the multiplier is 1: no hook, same outputs, same state_dict."""
    plan = suggest(cfg(rule), 32, depth=BASE_DEPTH)
    assert plan.residual_multiplier == 1.0
    if name == "builtin":

        def factory(w: int) -> nn.Module:
            return build_model("llama", w, suggest(cfg(rule), w), head_dim=16)

    else:
        factory = FACTORIES[name](BASE_DEPTH)  # type: ignore[assignment]
    torch.manual_seed(0)
    model = factory(32).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = out(model, ids())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parametrize(model, plan, factory, attention="ignore")
    assert torch.equal(out(model, ids()), expected)
    assert not any(m._forward_hooks for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_state_dict_keys_unchanged_and_model_pickles() -> None:
    plan = suggest(cfg("completep"), 32, depth=4)
    model = TinyGPT(32, 4)
    keys = list(model.state_dict())
    parametrize(model, plan, gpt(4), attention="ignore")
    assert list(model.state_dict()) == keys
    assert sum(len(m._forward_hooks) for m in model.modules()) == 8  # 2 branches x 4 blocks
    clone = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(clone(ids()), model(ids()))


def test_builtin_llama_scales_its_own_branches() -> None:
    """build_model reads depth and multiplier from the plan; the adapter checks them and hooks
    nothing (a built-in block multiplies its branches itself)."""
    c = replace(builtin_config("llama"), base_depth=2, depth_rule="completep")
    plan = suggest(c, 64, depth=8)
    model = build_model("llama", 64, plan)
    assert isinstance(model, TinyLlama) and model.depth == 8
    assert {b.residual_multiplier for b in model.blocks} == {0.25}
    branches = find_residual_branches(model, 8)
    assert branches.self_scaled and branches.container == "blocks" and branches.blocks == 8
    parametrize(model, plan, lambda w: build_model("llama", w, suggest(c, w, depth=8)), attention="ignore")
    assert not any(m._forward_hooks for m in model.modules())
    # Same function as the hooks give: the unscaled model with its o/down weights scaled.
    torch.manual_seed(0)
    plain = TinyLlama(
        64, depth=8, head_dim=16, vocab_size=128, seq_len=64, attention_scale=plan.attention_scale
    )
    torch.manual_seed(0)
    scaled = TinyLlama(
        64,
        depth=8,
        head_dim=16,
        vocab_size=128,
        seq_len=64,
        attention_scale=plan.attention_scale,
        residual_multiplier=0.25,
    )
    x = torch.randint(0, 128, (2, 16))
    torch.testing.assert_close(
        scaled(x), scaled_copy(plain, ("attn.o", "mlp.down"), 0.25)(x), rtol=1e-5, atol=1e-6
    )
    wrong = TinyLlama(64, depth=8, head_dim=16, attention_scale=plan.attention_scale)  # multiplier 1
    with pytest.raises(
        ClassificationError, match=r"scale their residual branches by 1 but the plan wants 0\.25"
    ):
        parametrize(wrong, plan, lambda w: TinyLlama(w, depth=8, head_dim=16))
    with pytest.raises(ConfigError, match=r"plan .* is for depth 8"):
        build_model("llama", 64, plan, depth=4)


def test_blocks_that_cannot_be_found_say_what_to_pass() -> None:
    plan = suggest(cfg("completep"), 32, depth=4)

    def mlp(w: int) -> nn.Module:
        return nn.Sequential(nn.Linear(8, w), nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 3))

    with pytest.raises(ClassificationError, match=r"cannot find the residual blocks.*residual_branches=\["):
        parametrize(mlp(32), plan, mlp)
    # No depth rule: nothing is looked for.
    parametrize(mlp(32), suggest(KEEP, 32, depth=4), mlp)


def test_block_count_must_match_the_plan() -> None:
    plan = suggest(cfg("completep"), 32, depth=4)
    with pytest.raises(
        ClassificationError, match=r"plan is for depth 4 \(base 2\) but the model has 3 blocks in h"
    ):
        parametrize(TinyGPT(32, 3), plan, gpt(3))
    # A plan made without a depth holds at the proxy's depth: on a deeper model nothing is
    # hooked, and a warning says the depth rule was not applied (a mistake, or no depth intended).
    model = TinyGPT(32, 4)
    with pytest.warns(UserWarning, match=r"4 residual blocks but the plan was made without a depth"):
        parametrize(model, suggest(cfg("completep"), 32), gpt(4), attention="ignore")
    assert not any(m._forward_hooks for m in model.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # at the proxy's own depth: silent
        parametrize(TinyGPT(32, 2), suggest(cfg("completep"), 32), gpt(2), attention="ignore")


class Pair(nn.Module):
    """``b(f(a(x)))``: a branch whose output projection has a name no rule knows."""

    def __init__(
        self, first: nn.Module, last: nn.Module, act: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        super().__init__()
        self.inp, self.act, self.last = first, act, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.act(self.inp(x)))


class RenamedLayer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = Pair(nn.Linear(width, width), nn.Linear(width, width), torch.tanh)
        self.ff = Pair(nn.Linear(width, 2 * width), nn.Linear(2 * width, width), torch.relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ff(x)


class Renamed(nn.Module):
    """Branch outputs with names no rule knows (``attn.last``, ``ff.last``)."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(48, width)
        self.layers = nn.ModuleList(RenamedLayer(width) for _ in range(depth))
        self.head = nn.Linear(width, 48)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_explicit_branch_patterns() -> None:
    plan = suggest(cfg("completep"), 32, depth=4)

    def factory(w: int) -> nn.Module:
        return Renamed(w, 4)

    with pytest.raises(ClassificationError, match="cannot find the residual blocks"):
        parametrize(factory(32), plan, factory)
    torch.manual_seed(0)
    model = factory(32)
    want = scaled_copy(model, ("attn.last", "ff.last"), 0.5)
    table = parametrize(model, plan, factory, residual_branches=[r"attn\.last$", r"ff\.last$"])
    torch.testing.assert_close(model(ids()), want(ids()))
    assert table["layers.0.attn.inp.bias"].in_block and not table["emb.weight"].in_block
    with pytest.raises(ClassificationError, match="matches no module"):
        parametrize(factory(32), plan, factory, residual_branches=[r"mlp\.down_proj$"])
    with pytest.raises(ClassificationError, match="but the model has 4 blocks"):
        parametrize(
            factory(32), suggest(cfg("completep"), 32, depth=8), factory, residual_branches=[r"\.last$"]
        )


def test_torch_encoder_layers_are_refused() -> None:
    """torch's TransformerEncoderLayer skips hooks in its eval fast path: refused, not silently
    half-scaled."""

    def enc(w: int) -> nn.Module:
        return nn.TransformerEncoder(
            nn.TransformerEncoderLayer(w, 2, 2 * w, batch_first=True), 4, enable_nested_tensor=False
        )

    with pytest.raises(ClassificationError, match="fused"):
        parametrize(enc(32), suggest(cfg("completep"), 32, depth=4), enc)


class SingleLayer(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.mix, self.out_proj = nn.Linear(w, w), nn.Linear(w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out_proj(torch.relu(self.mix(x)))


def test_one_branch_per_block_warns() -> None:
    def single(w: int) -> nn.Module:
        return nn.Sequential(*(SingleLayer(w) for _ in range(4)))

    with pytest.warns(UserWarning, match=r"one residual branch per block \(out_proj\)"):
        parametrize(single(32), suggest(cfg("completep"), 32, depth=4), single)


def test_block_vectors_and_eps_get_the_depth_factors() -> None:
    """depth-muP at 4x the base depth: block norms and hidden matrices at lr/2, the embedding,
    final norm and readout at the base lr; eps per group when the config scales it."""
    depth = 4 * BASE_DEPTH
    c = cfg("depth-mup", scale_eps=True)
    plan = suggest(c, 32, depth=depth)
    model = TinyGPT(32, depth)
    table = parametrize(model, plan, gpt(depth), attention="ignore")
    lr_of: dict[str, float] = {}
    eps_of: dict[str, float] = {}
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, plan, table)
    for g in groups:
        for p in g["params"]:
            lr_of[names[id(p)]], eps_of[names[id(p)]] = g["lr"], g["eps"]
    base = c.lr
    assert lr_of["h.0.ln_1.weight"] == pytest.approx(base / 2)
    assert lr_of["h.3.attn.c_proj.bias"] == pytest.approx(base / 2)
    assert lr_of["h.0.mlp.c_fc.weight"] == pytest.approx(base / 2)  # width at the base: m = 1
    assert lr_of["wte.weight"] == lr_of["ln_f.weight"] == lr_of["head.weight"] == pytest.approx(base)
    assert eps_of["h.0.ln_1.weight"] == pytest.approx(c.eps * (depth / BASE_DEPTH) ** -0.5)
    assert eps_of["wte.weight"] == pytest.approx(c.eps)
    opt = torch.optim.AdamW(groups, lr=plan.base_lr)  # torch takes per-group eps
    assert {g["eps"] for g in opt.param_groups} == set(eps_of.values())
    # Without scale_eps the groups carry no eps (the optimizer's own).
    plain = suggest(cfg("depth-mup"), 32, depth=depth)
    assert all("eps" not in g for g in param_groups(model, plain, parametrize(model, plain, gpt(depth))))


@pytest.fixture
def fresh_dynamo() -> Any:
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_hooks_under_torch_compile(fresh_dynamo: Any) -> None:
    """The branch multipliers are traced into the graph (fullgraph: no graph break per block)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    plan = suggest(cfg("completep"), 32, depth=4)
    torch.manual_seed(0)
    model = TinyGPT(32, 4)
    parametrize(model, plan, gpt(4), attention="ignore")
    want = model(ids())
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(ids()), want)
    assert backend.frame_count == 1
    loss = compiled(ids()).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert math.isfinite(float(loss.detach()))


def test_train_proxy_carries_depth_to_the_builtin_llama() -> None:
    """train_proxy passes model_kwargs' depth into suggest: the deep model gets the plan's
    multiplier (a plan at the base depth would be refused by the block-count check)."""
    from hptransfer.training import train_proxy

    c = replace(builtin_config("llama"), base_depth=2, depth_rule="completep")
    res = train_proxy(
        "charlm",
        32,
        c,
        steps=2,
        batch_size=2,
        model_kwargs={"depth": 4, "seq_len": 16},
        data_kwargs={"val_sequences": 2},
    )
    assert isinstance(res.model, TinyLlama) and res.model.depth == 4
    assert {b.residual_multiplier for b in res.model.blocks} == {0.5}
    assert math.isfinite(res.val_loss)
    with pytest.raises(ConfigError, match="no residual blocks"):
        build_model(
            "mlp",
            64,
            suggest(replace(builtin_config("mlp"), base_depth=2, depth_rule="completep"), 64, depth=4),
        )


def test_a_user_groups_base_weight_decay_takes_every_factor_of_the_plan() -> None:
    """A user's own group with the config's base wd gets exactly the plan's wd: width, depth
    (depth-muP's m_L**(1-alpha)) and run-length factors alike."""
    from hptransfer.scaling import default_config

    config = replace(default_config(), depth_rule="depth-mup")
    plan = suggest(config, 256, depth=8, tokens=8_192_000)
    assert plan["hidden"].wd_scale not in (0.0, 1.0) and plan["output"].wd_scale != 1.0

    def make(w: int) -> nn.Module:
        return build_model("llama", w, suggest(config, w, depth=8), vocab_size=64, seq_len=16)

    model = make(256)
    table = parametrize(model, plan, make, attention="ignore")

    def wd_of(groups: list[dict[str, object]]) -> dict[int, float]:
        return {id(p): float(g["weight_decay"]) for g in groups for p in g["params"]}  # type: ignore[attr-defined]

    planned = wd_of(param_groups(model, plan, table))
    mine = wd_of(
        param_groups(
            model, plan, table, [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
        )
    )
    assert mine == pytest.approx(planned)
    halved = wd_of(
        param_groups(
            model,
            plan,
            table,
            [{"params": list(model.parameters()), "weight_decay": config.weight_decay / 2}],
        )
    )
    assert halved == pytest.approx({k: v / 2 for k, v in planned.items()})


def test_the_built_in_llama_refuses_a_depth_the_plan_is_not_for() -> None:
    from hptransfer.scaling import default_config

    plan = suggest(default_config(), 256)  # no depth: holds at the proxy's depth (2)
    with pytest.raises(ConfigError, match=r"holds at the proxy's depth 2 \(completep\).*depth=4"):
        build_model("llama", 256, plan, depth=4)
    assert len(build_model("llama", 256, plan, depth=2, vocab_size=64, seq_len=16).blocks) == 2
