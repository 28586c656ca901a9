"""Optimizer step time with hptransfer's param groups vs the same groups made by hand in
torch AdamW, one-group AdamW, and mup's MuAdamW, on the built-in LLaMA-style proxy at two sizes.

Targets (DESIGN.md): ours ≤ 1.02× the hand-made groups, and not slower than MuAdamW.

    python benchmarks/optimizer_step.py            # two sizes, ~1 min on 2 cores
    python benchmarks/optimizer_step.py --quick    # smoke run

Last line: ours / hand-made and ours / MuAdamW at the larger size.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch import nn

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes = [(128, 2), (256, 2)] if args.quick else [(256, 2), (1024, 4)]
    rounds, steps = (3, 3) if args.quick else (15, 10)
    results: dict[tuple[int, int], dict[str, float]] = {}
    for width, depth in sizes:
        r = results[(width, depth)] = bench(width, depth, rounds, steps)
        n_params = sum(p.numel() for p in build_model("llama", width, depth=depth).parameters())
        print(
            f"width {width}, depth {depth} ({n_params / 1e6:.1f}M params): "
            + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in r.items())
        )
        print(
            f"  ratios: hptransfer / hand-made {r['hptransfer'] / r['hand-made']:.3f}, "
            f"hand-made / one group {r['hand-made'] / r['one group']:.3f}"
            + (f", hptransfer / MuAdamW {r['hptransfer'] / r['MuAdamW']:.3f}" if "MuAdamW" in r else "")
        )
    last = results[sizes[-1]]
    tail = f", {last['hptransfer'] / last['MuAdamW']:.3f}x MuAdamW" if "MuAdamW" in last else ""
    print(
        f"optimizer step at width {sizes[-1][0]}: hptransfer groups "
        f"{last['hptransfer'] / last['hand-made']:.3f}x hand-made groups (target <= 1.02){tail}"
    )


if __name__ == "__main__":
    main()
