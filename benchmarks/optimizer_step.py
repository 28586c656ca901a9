"""Optimizer step time with hptransfer's param groups vs the same groups made by hand in
torch AdamW, one-group AdamW, and mup's MuAdamW, on the built-in LLaMA-style proxy at two sizes.

Targets (DESIGN.md): ours ≤ 1.02× the hand-made groups, and not slower than MuAdamW.

    python3 benchmarks/optimizer_step.py            # two sizes, ~1 min; writes benchmarks/results/
    python3 benchmarks/optimizer_step.py --quick    # smoke run, writes nothing

``python3 benchmarks/render_docs.py`` then writes docs/results-optimizer_step.md.
Last line: ours / hand-made and ours / MuAdamW at the larger size.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _results, also when imported by path
from _results import command_line, environment_table, result_document, save_results
from hptransfer.models import build_model, builtin_config
from hptransfer.scaling import suggest
from hptransfer.scaling.torch_adapter import adamw, classify, meta_model


def hand_groups(model: nn.Module, plan, base_lr: float) -> list[dict]:  # type: ignore[no-untyped-def]
    """What a careful user writes by hand: the same (lr, wd) groups, chosen by name."""
    vec, mat = [], []
    for name, p in model.named_parameters():
        (vec if p.ndim < 2 or "embed" in name else mat).append(p)
    return [
        {"params": vec, "lr": plan["vector"].lr, "weight_decay": plan["vector"].weight_decay},
        {"params": mat, "lr": plan["hidden"].lr, "weight_decay": plan["hidden"].weight_decay},
    ]


def time_steps(opt: torch.optim.Optimizer, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps


def bench(width: int, depth: int, rounds: int, steps: int) -> dict[str, float]:
    cfg = builtin_config("llama")
    plan = suggest(cfg, width)
    torch.manual_seed(0)

    def factory(w: int) -> nn.Module:
        return build_model("llama", w, suggest(cfg, w), depth=depth)

    base = factory(width)
    models = {k: copy.deepcopy(base) for k in ("one group", "hand-made", "hptransfer", "MuAdamW")}
    for model in models.values():  # deepcopy drops .grad: give every copy the same gradients
        for p, q in zip(model.parameters(), base.parameters()):
            gen = torch.Generator().manual_seed(q.numel())
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    table = classify(
        models["hptransfer"], meta_model(factory, cfg.base_width if width != cfg.base_width else 2 * width)
    )
    opts: dict[str, torch.optim.Optimizer] = {
        "one group": torch.optim.AdamW(
            models["one group"].parameters(), lr=plan.base_lr, weight_decay=cfg.weight_decay
        ),
        "hand-made": torch.optim.AdamW(hand_groups(models["hand-made"], plan, plan.base_lr)),
        "hptransfer": adamw(models["hptransfer"], plan, table),
    }
    try:
        import mup

        def with_mu_readout(model: nn.Module) -> nn.Module:
            head = model.lm_head
            readout = mup.MuReadout(
                head.in_features, head.out_features, bias=False, device=head.weight.device
            )
            if not head.weight.is_meta:
                readout.weight.data.copy_(head.weight.data)
                readout.weight.grad = head.weight.grad
                assert readout.weight.grad is not None
            model.lm_head = readout
            return model

        mu_model = with_mu_readout(models["MuAdamW"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mup.set_base_shapes(
                mu_model,
                with_mu_readout(meta_model(factory, cfg.base_width)),
                delta=with_mu_readout(meta_model(factory, 2 * cfg.base_width)),
                rescale_params=False,
            )
        opts["MuAdamW"] = mup.MuAdamW(mu_model.parameters(), lr=plan.base_lr, weight_decay=cfg.weight_decay)
    except ImportError:
        print("mup not installed: `pip install --no-deps mup==1.0.0 pyyaml` to compare MuAdamW")
    for opt in opts.values():  # allocate state; every parameter must really be stepped
        opt.step()
        assert all(len(opt.state[p]) > 0 for g in opt.param_groups for p in g["params"])
    samples: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):  # interleaved, so background load hits every variant alike
        for name, opt in opts.items():
            samples[name].append(time_steps(opt, steps))
    return {k: statistics.median(v) for k, v in samples.items()}


TARGET_HAND, TARGET_MU = 1.02, 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (saves no results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes = [(128, 2), (256, 2)] if args.quick else [(256, 2), (1024, 4)]
    rounds, steps = (3, 3) if args.quick else (15, 10)
    rows = []
    for width, depth in sizes:
        r = bench(width, depth, rounds, steps)
        n_params = sum(p.numel() for p in build_model("llama", width, depth=depth).parameters())
        rows.append({"width": width, "depth": depth, "params": n_params, "seconds_per_step": r})
        print(
            f"width {width}, depth {depth} ({n_params / 1e6:.1f}M params): "
            + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in r.items())
        )
    results = {"quick": args.quick, "rounds": rounds, "steps_per_round": steps, "threads": 1, "sizes": rows}
    if args.quick:
        render(result_document("optimizer_step", results), Path(tempfile.mkdtemp()))
    else:
        print(f"results: {save_results('optimizer_step', results)}")
    print(headline_line(results))
    return 0


# -- docs from the results file (pure) -----------------------------------------------------------
def _ratio(size: dict[str, Any], a: str, b: str) -> float | None:
    s = size["seconds_per_step"]
    return s[a] / s[b] if a in s and b in s else None


def _fmt(x: float | None) -> str:
    return "n/a (mup not installed)" if x is None else f"{x:.3f}×"


def headline_line(r: dict[str, Any]) -> str:
    last = r["sizes"][-1]
    mu = _ratio(last, "hptransfer", "MuAdamW")
    tail = f", {mu:.3f}x MuAdamW" if mu is not None else ""
    return (
        f"optimizer step at width {last['width']}: hptransfer groups "
        f"{_ratio(last, 'hptransfer', 'hand-made'):.3f}x hand-made groups (target <= {TARGET_HAND}){tail}"
    )


def render(data: dict[str, Any], figures: Path) -> str:
    r = data["results"]
    variants = list(r["sizes"][0]["seconds_per_step"])
    head = "| width | depth | params | " + " | ".join(f"{v} (ms)" for v in variants) + " | ours / hand-made "
    head += "| ours / MuAdamW | hand-made / one group |"
    lines = [head, "|" + "---|" * (len(variants) + 6)]
    for size in r["sizes"]:
        s = size["seconds_per_step"]
        lines.append(
            f"| {size['width']} | {size['depth']} | {size['params'] / 1e6:.1f}M | "
            + " | ".join(f"{s[v] * 1e3:.2f}" for v in variants)
            + "".join(
                f" | {_fmt(_ratio(size, a, b))}"
                for a, b in (
                    ("hptransfer", "hand-made"),
                    ("hptransfer", "MuAdamW"),
                    ("hand-made", "one group"),
                )
            )
            + " |"
        )
    last = r["sizes"][-1]
    hand, mu = _ratio(last, "hptransfer", "hand-made"), _ratio(last, "hptransfer", "MuAdamW")
    verdict = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    HAND = TARGET_HAND
    return f"""# Optimizer-step overhead of hptransfer's parameter groups

Generated from `benchmarks/results/optimizer_step.json`, written by `{command_line(data)}`
({"smoke run: not evidence" if r["quick"] else "full run"}).

One `AdamW.step()` on the built-in LLaMA-style proxy with identical gradients, four ways: one
group for every parameter; the same (lr, wd) groups made by hand; `hptransfer`'s `adamw(model,
plan, table)` (groups merged by equal lr and wd, so foreach kernels stay fast); and the `mup`
package's `MuAdamW`. Median over {r["rounds"]} interleaved rounds of {r["steps_per_round"]} steps
each (interleaved so that background load hits every variant alike), {r["threads"]} torch thread.

{chr(10).join(lines)}

| target (at the larger size) | measured | |
|---|---|---|
| ours ≤ {TARGET_HAND}× the hand-made groups | {_fmt(hand)} | {verdict(hand is not None and hand <= HAND)} |
| ours not slower than MuAdamW | {_fmt(mu)} | {verdict(mu is not None and mu <= TARGET_MU)} |

## Environment

{environment_table(data["environment"])}
"""


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    last = r["sizes"][-1]
    cmd = "`python3 benchmarks/optimizer_step.py`"
    return [
        (
            f"optimizer step, our groups vs the same groups by hand (≤ {TARGET_HAND}×)",
            f"**{_fmt(_ratio(last, 'hptransfer', 'hand-made'))}** at width {last['width']} "
            f"({last['params'] / 1e6:.1f}M params)",
            cmd,
        ),
        (
            "optimizer step vs mup's MuAdamW (not slower)",
            f"**{_fmt(_ratio(last, 'hptransfer', 'MuAdamW'))}**",
            cmd,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
