"""A parametrized model trains the same on real training stacks (issue 10, item 5).

``torch.compile``, DDP and FSDP2 (CPU, gloo, 2 processes) and a ``state_dict`` round trip, on a
tiny language model with the three things the adapter hooks or checks: a readout multiplier
(tied to the embedding, and an untied variant), an MLP hidden layer and
``F.scaled_dot_product_attention(..., scale=plan.attention_scale)``.

Kept small for a shared 2-core machine: width 32, a few steps, one torch thread, and one spawn of
two processes for all the distributed cases.
"""

from __future__ import annotations

import datetime
import functools
import io
import math
import os
import socket
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from hptransfer import ProxyConfig, suggest
from hptransfer.scaling.torch_adapter import (
    ParamTable,
    apply_multipliers,
    build_optimizer,
    param_groups,
    parametrize,
)

VOCAB, SEQ, ROWS = 24, 8, 4
WIDTH = 32
# Fixed head count: the head size doubles from the base width, so the plan's attention scale
# (muP: 1/d_head) differs from sdpa's default 1/sqrt(d_head) and the check has something to see.
# readout="multiplier" at width != base: the readout hooks multiply by output_mult/m = 0.5.
CFG = ProxyConfig(base_width=16, n_heads=2, readout="multiplier")
PLAN = suggest(CFG, WIDTH)
DEFAULT_SCALE = (WIDTH // 2) ** -0.5  # what sdpa uses without scale=

# Inductor needs a C compiler and took 56 s to compile this model's forward and backward on the
# shared 2-core test machine (cold cache), far over the budget of the whole file; aot_eager runs
# the same Dynamo capture (hooks included) and AOTAutograd joint graph, without code generation.
BACKEND = "aot_eager"
TIED = pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])


class TinyLM(nn.Module):
    """Embedding, one causal attention block, one MLP block, a readout (tied or not)."""

    def __init__(self, width: int, tied: bool = True, scale: float | None = None, n_heads: int = 2) -> None:
        super().__init__()
        self.n_heads, self.scale = n_heads, scale
        self.embed = nn.Embedding(VOCAB, width)
        # No qkv bias: the key bias has an exactly zero gradient (softmax is shift invariant), so
        # Adam would turn rounding noise into full-lr steps and no two runs could agree.
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, t = idx.shape
        x = self.embed(idx)
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, -1))
        x = x + self.down(F.gelu(self.up(self.norm(x))))
        return self.head(x)


def make(
    tied: bool, *, scale: float | None = PLAN.attention_scale, seed: int = 0, **kwargs: Any
) -> tuple[TinyLM, ParamTable]:
    """The same model every time for one seed, parametrized for PLAN (kwargs to parametrize)."""
    torch.manual_seed(seed)
    model = TinyLM(WIDTH, tied=tied, scale=scale)
    table = parametrize(model, PLAN, reference=functools.partial(TinyLM, tied=tied), **kwargs)
    return model, table


def batch(step: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (ROWS, SEQ), generator=torch.Generator().manual_seed(1000 + step))


def lm_loss(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    logits = model(idx)
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), idx[:, 1:].reshape(-1))


def train(
    model: nn.Module, opt: torch.optim.Optimizer, steps: range, rows: slice = slice(None)
) -> list[torch.Tensor]:
    losses = []
    for step in steps:
        loss = lm_loss(model, batch(step)[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach().clone())
    return losses


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_the_hooks_under_test_are_active() -> None:
    """The cases below would pass vacuously with multipliers of 1 or a scale sdpa uses anyway."""
    assert PLAN.width != PLAN.base_width
    assert PLAN.tied_output_multiplier == pytest.approx(0.5)
    assert PLAN["output"].multiplier == pytest.approx(0.5)
    assert PLAN.attention_scale is not None
    assert not math.isclose(PLAN.attention_scale, DEFAULT_SCALE, rel_tol=1e-3)
    for tied in (True, False):
        model, table = make(tied)
        assert len(model.head._forward_pre_hooks) == 1  # the readout multiplier
        assert bool(table.tied()) is tied


# -- torch.compile ---------------------------------------------------------------------------


@pytest.fixture
def fresh_dynamo() -> Any:
    """Each compile case starts from an empty Dynamo cache (no recompile limit reached across cases,
    so a case never passes by silently falling back to eager)."""
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def counting_backend() -> Any:
    from torch._dynamo.testing import CompileCounterWithBackend

    return CompileCounterWithBackend(BACKEND)


@TIED
def test_compile_trains_like_eager(tied: bool, fresh_dynamo: Any) -> None:
    """Compiled and eager training of the same parametrized model (readout hook active, attention
    check hook installed) give the same losses and parameters over 5 AdamW steps."""
    eager, table = make(tied)
    compiled_model, _ = make(tied)
    assert params_of(eager).keys() == params_of(compiled_model).keys() == set(table)
    backend = counting_backend()
    compiled = torch.compile(compiled_model, backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        want = train(eager, build_optimizer(eager, PLAN, table), range(5))
        got = train(compiled, build_optimizer(compiled_model, PLAN, table), range(5))
    # The scale is right: the attention check stays silent.
    assert not [w for w in caught if "attention" in str(w.message)], [str(w.message) for w in caught]
    assert backend.frame_count >= 1, "nothing was compiled"
    torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-4, atol=1e-5)
    for name, value in params_of(compiled_model).items():
        torch.testing.assert_close(value, params_of(eager)[name], rtol=1e-4, atol=1e-5, msg=name)
    # The readout multiplier was traced, not dropped: without it the first loss differs.
    unhooked, _ = make(tied)
    unhooked.head._forward_pre_hooks.clear()
    assert not torch.allclose(lm_loss(unhooked, batch(0)), want[0])


def test_compile_still_checks_attention(fresh_dynamo: Any) -> None:
    model, _ = make(True, scale=None)  # sdpa's default scale, not the plan's
    compiled = torch.compile(model, backend=BACKEND)
    with pytest.warns(UserWarning, match="attention logits are scaled by"):
        compiled(batch(0))


@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph-breaks", "fullgraph"])
def test_compile_attention_apply_rewrites(fullgraph: bool, fresh_dynamo: Any) -> None:
    """attention='apply' under torch.compile rewrites the scale as eagerly: its hooks run outside
    the graph (torch.compiler.disable), with or without fullgraph."""
    eager, table = make(True, scale=None, attention="apply")
    want = train(eager, build_optimizer(eager, PLAN, table), range(3))
    ignored, _ = make(True, scale=None, attention="ignore")
    assert not torch.allclose(lm_loss(ignored, batch(0)), want[0])  # the rewrite matters
    model, _ = make(True, scale=None, attention="apply")
    compiled = torch.compile(model, backend=BACKEND, fullgraph=fullgraph)
    got = train(compiled, build_optimizer(model, PLAN, table), range(3))
    torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-4, atol=1e-5)


# -- state_dict round trip -------------------------------------------------------------------


@TIED
@pytest.mark.parametrize("rebuild", ["reparametrize", "same-table"])
def test_state_dict_round_trip_continues_bit_for_bit(tied: bool, rebuild: str) -> None:
    """Save model + optimizer mid-run (weights_only load), rebuild from a fresh model (other init),
    continue: the same losses and parameters as an uninterrupted run, bit for bit."""
    whole, table = make(tied)
    want = train(whole, build_optimizer(whole, PLAN, table), range(6))

    first, first_table = make(tied)
    opt = build_optimizer(first, PLAN, first_table)
    head = train(first, opt, range(3))
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": opt.state_dict()}, buffer)
    del first, opt
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    torch.manual_seed(123)  # a fresh model with another init: everything must come from the file
    fresh = TinyLM(WIDTH, tied=tied, scale=PLAN.attention_scale)
    fresh.load_state_dict(saved["model"])
    if rebuild == "reparametrize":
        # init=False: the loaded values stay; the readout hook (not in a state_dict) comes back.
        fresh_table = parametrize(fresh, PLAN, reference=functools.partial(TinyLM, tied=tied), init=False)
        assert dict(fresh_table) == dict(first_table)
    else:
        fresh_table = first_table
        apply_multipliers(fresh, PLAN, fresh_table)  # hooks are not saved: re-hook by hand
    assert all(torch.equal(v, saved["model"][n]) for n, v in fresh.state_dict().items())
    if tied:
        assert fresh.head.weight is fresh.embed.weight
    fresh_opt = build_optimizer(fresh, PLAN, fresh_table)
    fresh_opt.load_state_dict(saved["optim"])
    tail = train(fresh, fresh_opt, range(3, 6))

    assert torch.equal(torch.stack(head + tail), torch.stack(want))
    final = params_of(whole)
    for name, value in params_of(fresh).items():
        assert torch.equal(value, final[name]), name


# -- DDP and FSDP2: one spawn of two gloo processes ---------------------------------------

WORLD = 2
LOCAL = ROWS // WORLD
DIST_STEPS = range(3)
JOIN_TIMEOUT_S = 150.0  # the whole spawn; a hung collective times out first (PG timeout below)
PG_TIMEOUT = datetime.timedelta(seconds=45)
CASES = ("ddp-tied", "ddp-untied", "fsdp-tied", "fsdp-untied")


def _global_mean(loss: torch.Tensor) -> torch.Tensor:
    """The loss on the concatenated batch (every rank has as many tokens)."""
    total = loss.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def _run_ddp(rank: int, tied: bool) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    model, table = make(tied)
    ddp = DDP(model)
    # The wrapper's names carry a "module." prefix; groups from it and from .module are the same.
    via_wrapper = param_groups(ddp, PLAN, table)
    names = [n for n, _ in ddp.module.named_parameters()]
    groups = param_groups(ddp.module, PLAN, table)
    same_groups = [[id(p) for p in g["params"]] for g in via_wrapper] == [
        [id(p) for p in g["params"]] for g in groups
    ] and [g["lr"] for g in via_wrapper] == [g["lr"] for g in groups]
    opt = torch.optim.AdamW(groups, lr=PLAN.base_lr)
    local = train(ddp, opt, DIST_STEPS, rows=slice(rank * LOCAL, (rank + 1) * LOCAL))
    return {
        "losses": torch.stack([_global_mean(x) for x in local]),
        "params": params_of(ddp.module),
        "names_match": names == list(table),
        "same_groups": same_groups,
    }


def _run_fsdp(rank: int, tied: bool, mesh: Any) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    model, table = make(tied)  # parametrize first (init on full tensors), then shard
    fully_shard(model, mesh=mesh)
    named = list(model.named_parameters())
    opt = torch.optim.AdamW(param_groups(model, PLAN, table), lr=PLAN.base_lr)  # after sharding
    local = train(model, opt, DIST_STEPS, rows=slice(rank * LOCAL, (rank + 1) * LOCAL))
    return {
        "losses": torch.stack([_global_mean(x) for x in local]),
        "params": {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()},
        "names_match": [n for n, _ in named] == list(table),
        "all_dtensors": all(isinstance(p, DTensor) for _, p in named),
    }


def _unsupported(exc: BaseException) -> bool:
    """An error that says this torch build cannot run FSDP2 on CPU/gloo (not a bug of ours)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, (ImportError, NotImplementedError)) or (
        "gloo" in text and ("not supported" in text or "unsupported" in text or "not implemented" in text)
    )


def _dist_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=PG_TIMEOUT)
    results: dict[str, Any] = {}
    mesh = None
    try:
        for case in CASES:
            kind, variant = case.split("-")
            tied = variant == "tied"
            try:
                if kind == "ddp":
                    results[case] = _run_ddp(rank, tied)
                else:
                    from torch.distributed.device_mesh import init_device_mesh

                    mesh = mesh or init_device_mesh("cpu", (world,))
                    results[case] = _run_fsdp(rank, tied, mesh)
            except Exception as exc:
                key = "skip" if kind == "fsdp" and _unsupported(exc) else "error"
                results[case] = {key: f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
                break  # the ranks may now disagree on the next collective: stop here
    finally:
        torch.save(results, Path(out) / f"rank{rank}.pt")
        dist.destroy_process_group()
        # Leave without interpreter teardown: gloo's threads can abort a rank on exit
        # ("terminate called without an active exception") after its results are saved.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    if not dist.is_gloo_available():
        pytest.skip("the gloo backend is not available in this torch build")
    out = tmp_path_factory.mktemp("dist")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [
        ctx.Process(target=_dist_worker, args=(rank, WORLD, port, str(out)), daemon=True)
        for rank in range(WORLD)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    if hung:
        pytest.fail(f"distributed ranks {hung} still running after {JOIN_TIMEOUT_S:.0f} s: killed")
    codes = [p.exitcode for p in procs]
    if any(codes):
        pytest.fail(f"distributed workers exited with {codes} (their stderr is in the captured output)")
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


@functools.cache
def single_process(tied: bool) -> dict[str, Any]:
    """The reference: one process, the concatenated batch (all ranks' rows), same groups."""
    model, table = make(tied)
    opt = torch.optim.AdamW(param_groups(model, PLAN, table), lr=PLAN.base_lr)
    return {"losses": torch.stack(train(model, opt, DIST_STEPS)), "params": params_of(model)}


def case_results(results: list[dict[str, Any]], case: str) -> list[dict[str, Any]]:
    per_rank = [r.get(case) for r in results]
    for rank, r in enumerate(per_rank):
        if r is None:
            pytest.fail(f"rank {rank} did not run {case}: an earlier case failed ({list(results[rank])})")
        if "error" in r:
            pytest.fail(f"rank {rank}, {case}:\n{r['error']}")
        if "skip" in r:
            pytest.skip(
                f"FSDP2 cannot run on CPU/gloo in torch {torch.__version__}: {r['skip'].splitlines()[0]}"
            )
    return per_rank  # type: ignore[return-value]


def assert_matches_single_process(per_rank: list[dict[str, Any]], tied: bool) -> None:
    ref = single_process(tied)
    for rank, r in enumerate(per_rank):
        torch.testing.assert_close(r["losses"], ref["losses"], rtol=1e-5, atol=1e-6, msg=f"rank {rank}")
        assert r["params"].keys() == ref["params"].keys()
        for name, value in r["params"].items():
            torch.testing.assert_close(
                value, ref["params"][name], rtol=1e-4, atol=1e-5, msg=f"rank {rank} {name}"
            )
    for name, value in per_rank[0]["params"].items():
        for r in per_rank[1:]:
            assert torch.equal(value, r["params"][name]), f"{name} differs across ranks"


@TIED
def test_ddp_matches_single_process(tied: bool, dist_results: list[dict[str, Any]]) -> None:
    """DDP (2 gloo ranks, rank-dependent rows): groups from ``ddp.module``'s names; the final
    parameters equal across ranks and match one process on the concatenated batch."""
    per_rank = case_results(dist_results, f"ddp-{'tied' if tied else 'untied'}")
    for r in per_rank:
        assert r["names_match"]
        assert r["same_groups"]  # param_groups(ddp, ...) sees through the "module." prefix
    assert_matches_single_process(per_rank, tied)


@TIED
def test_fsdp2_matches_single_process(tied: bool, dist_results: list[dict[str, Any]]) -> None:
    """FSDP2 (fully_shard after parametrize, 2 gloo ranks): the sharded parameters are DTensors
    under the same names, groups built after sharding; losses and gathered parameters match one
    process on the concatenated batch."""
    per_rank = case_results(dist_results, f"fsdp-{'tied' if tied else 'untied'}")
    for r in per_rank:
        assert r["names_match"] and r["all_dtensors"]
    assert_matches_single_process(per_rank, tied)
