"""Depth benchmark: does the optimum base lr stay put as the number of blocks grows?

On the built-in byte-level LM task (the LLaMA-style proxy on Python stdlib sources) at a fixed
width, lr sweeps at depths 2, 4, 8, 16 (base depth 2) under

* ``sp``: no depth rule (and, at the base width, the same model as width-only muP: the
  benchmark checks that the two plans are identical and then trains them once);
* ``depth-mup``: residual branches × (L/L_base)^-1/2, block lr × (L/L_base)^-1/2 (alpha = 1/2);
* ``completep``: residual branches × L_base/L, no lr factor (alpha = 1; Dey et al.,
  arXiv 2505.01618), as ``suggest(config, width, depth=L)`` plans them and the built-in llama
  applies them.

Each sweep starts on five log2-spaced lrs around a guess and grows on the side of its minimum
until the minimum is interior. The optimum per depth is a parabola in log2 lr through the grid
minimum and two grid points either side (of the seed-mean losses); **drift is max − min of the optimum over
all depths**. Regret: the base-depth optimum carried to the deepest model, against the best loss
any parametrization reached in its own sweep there. Runs whose plan is the same (every
parametrization at the base depth) are trained once. Every run is cached in
``benchmarks/.depth-cache.jsonl`` (``--cache``), so a killed run resumes.

Run:  python3 benchmarks/depth.py            (full; writes benchmarks/results/depth.json)
      python3 benchmarks/depth.py --quick    (smoke run, seconds; writes nothing)

Then ``python3 benchmarks/render_docs.py`` writes docs/results-depth.md and its figure. The last
printed line is the headline: lr drift under CompleteP against the 0.5 log2 target, beside
depth-muP and SP.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _results, also when imported by path
from _results import as_float, command_line, environment_table, finish, save_figure
from _sweeps import RunCache, seed_mean
from hptransfer.scaling import ProxyConfig, suggest
from hptransfer.training import train_proxy
from hptransfer.tuning.sweep import fit_optimum

ROOT = Path(__file__).resolve().parents[1]

#: label -> (width rule, depth rule)
PARAMETRIZATIONS: dict[str, tuple[str, str]] = {
    "sp": ("sp", "none"),
    "mup": ("mup", "none"),
    "depth-mup": ("mup", "depth-mup"),
    "completep": ("mup", "completep"),
}
TARGET_DRIFT, TARGET_REGRET, TARGET_MINUTES = 0.5, 0.01, 25
FIT_WINDOW = 2  # parabola through the grid minimum and 2 points either side (steadier on noisy curves)


@dataclass(frozen=True)
class Setting:
    width: int
    head_dim: int
    depths: tuple[int, ...]
    base_depth: int
    seq_len: int
    batch_size: int
    steps: int
    seeds: tuple[int, ...]
    start_log2: tuple[float, ...]  # the first grid, grown while the minimum is at an edge
    bounds: tuple[float, float]  # never beyond these log2 lrs
    init_std: float
    val_sequences: int
    parametrizations: tuple[str, ...] = ("sp", "mup", "completep")


FULL = Setting(
    width=64,
    head_dim=16,
    depths=(2, 4, 8, 16),
    base_depth=2,
    seq_len=32,
    batch_size=32,
    steps=120,
    seeds=(0, 1),
    start_log2=(-8.0, -7.0, -6.0, -5.0),
    bounds=(-14.0, -1.0),
    init_std=0.1,
    val_sequences=128,
)
QUICK = Setting(
    width=32,
    head_dim=16,
    depths=(1, 2),
    base_depth=1,
    seq_len=16,
    batch_size=4,
    steps=3,
    seeds=(0,),
    start_log2=(-7.0, -5.0, -3.0),
    bounds=(-7.0, -3.0),
    init_std=0.1,
    val_sequences=8,
)


def config(s: Setting, label: str, lr: float) -> ProxyConfig:
    rule, depth_rule = PARAMETRIZATIONS[label]
    return ProxyConfig(
        name="bench-depth",
        base_width=s.width,
        head_dim=s.head_dim,
        lr=lr,
        weight_decay=0.0,
        rule=rule,
        base_depth=s.base_depth,
        depth_rule=depth_rule,
        init_std=s.init_std,
        embed_init_std=s.init_std,
        output_init_std=0.0,
    )


def fingerprint(s: Setting, label: str, depth: int) -> str:
    """What the run depends on, rule names left out: equal plans train the same model."""
    plan = suggest(config(s, label, 1.0), s.width, depth=depth).to_dict()
    for key in ("rule", "wd_exponent", "readout", "depth_rule", "depth_alpha"):
        plan.pop(key, None)
    if plan["width_mult"] == 1:  # init is corrected by m**init_exponent: 1 at the base width
        for group in (*plan["groups"].values(), *plan["variants"].values()):
            group.pop("init_exponent", None)
    return json.dumps(plan, sort_keys=True, default=str)


class Runs(RunCache):
    """Seed-mean validation loss per (plan, depth, log2 lr), cached one JSON line per run."""

    def __init__(self, s: Setting, cache: Path | None) -> None:
        super().__init__(cache)
        self.s = s

    def loss(self, label: str, depth: int, log2_lr: float, seed: int) -> float:
        s = self.s
        key = json.dumps(
            [fingerprint(s, label, depth), depth, round(log2_lr, 6), seed, s.steps, s.batch_size, s.seq_len]
        )

        def run() -> dict[str, Any]:
            res = train_proxy(
                "charlm",
                s.width,
                config(s, label, 2.0**log2_lr),
                steps=s.steps,
                batch_size=s.batch_size,
                seed=seed,
                data_kwargs={"val_sequences": s.val_sequences},
                model_kwargs={"depth": depth, "head_dim": s.head_dim, "seq_len": s.seq_len},
                schedule="cosine",
                warmup=max(1, s.steps // 10),
            )
            return {"loss": str(res.val_loss), "seconds": res.seconds}

        return as_float(self.row(key, run)["loss"])

    def mean(self, label: str, depth: int, log2_lr: float) -> tuple[float, list[float]]:
        return seed_mean([self.loss(label, depth, log2_lr, seed) for seed in self.s.seeds])


def sweep(runs: Runs, label: str, depth: int, progress: bool) -> dict[str, Any]:
    """Grid around the start, grown on the minimum's side until FIT_WINDOW points lie on each
    side of it (or the bounds stop it)."""
    s = runs.s
    points: dict[float, tuple[float, list[float]]] = {}
    todo = list(s.start_log2)
    while todo:
        for x in todo:
            points[x] = runs.mean(label, depth, x)
            if progress:
                print(f"  {label:>10} depth {depth:>2} lr 2^{x:g}: {points[x][0]:.4f}", flush=True)
        xs = sorted(points)
        finite = [x for x in xs if math.isfinite(points[x][0])]
        todo = []
        if finite:
            best = min(finite, key=lambda x: points[x][0])
            i = xs.index(best)
            if i < FIT_WINDOW and xs[0] - 1 >= s.bounds[0]:
                todo = [xs[0] - 1]
            elif len(xs) - 1 - i < FIT_WINDOW and xs[-1] + 1 <= s.bounds[1]:
                todo = [xs[-1] + 1]
    xs = sorted(points)
    ys = [points[x][0] for x in xs]
    opt = fit_optimum(xs, ys, window=FIT_WINDOW)
    seed_opt = [
        fit_optimum(xs, [points[x][1][k] for x in xs], window=FIT_WINDOW).log2 for k in range(len(s.seeds))
    ]
    return {
        "log2": xs,
        "loss": ys,
        "seed_losses": [points[x][1] for x in xs],
        "optimum": {"log2": opt.log2, "loss": opt.loss, "at_edge": opt.at_edge, "fitted": opt.fitted},
        "seed_optima": seed_opt,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run in seconds (saves no results)")
    ap.add_argument("--cache", type=Path, default=None, help="run cache (JSON lines; resumable)")
    ap.add_argument("--figures", type=Path, default=None, help="--quick: where the rendered figure goes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--depth-mup", action="store_true", help="sweep depth-muP (alpha 1/2) too")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per point (default: the setting's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    if args.depth_mup:
        s = replace(s, parametrizations=(*s.parametrizations, "depth-mup"))
    if args.seeds is not None:
        if args.seeds < 1:
            ap.error("--seeds must be >= 1")
        s = replace(s, seeds=tuple(range(args.seeds)))
    tmp = Path(tempfile.mkdtemp(prefix="hpt-depth-")) if args.quick else None
    cache = None if args.quick else (args.cache or ROOT / "benchmarks" / ".depth-cache.jsonl")
    runs = Runs(s, cache)
    progress = not args.no_progress
    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(
        f"depth benchmark ({'quick' if args.quick else 'full'}): charlm, width {s.width}, depths "
        f"{list(s.depths)} (base {s.base_depth}), {s.steps} steps, seeds {list(s.seeds)}"
    )

    # Width-only muP is SP at the base width: train it only if some plan differs.
    aliases: dict[str, str] = {}
    labels = list(s.parametrizations)
    for label in labels:
        for other in labels[: labels.index(label)]:
            if other not in aliases and all(
                fingerprint(s, label, d) == fingerprint(s, other, d) for d in s.depths
            ):
                aliases[label] = other
                break
    swept = [label for label in labels if label not in aliases]
    sweeps = {label: {str(d): sweep(runs, label, d, progress) for d in s.depths} for label in swept}

    # Regret at the deepest model: the base-depth optimum carried there vs the best of any sweep.
    deepest = str(s.depths[-1])
    best_any = min(min(v[deepest]["loss"]) for v in sweeps.values())
    regret = {}
    for label, per_depth in sweeps.items():
        carried = per_depth[str(s.base_depth)]["optimum"]["log2"]
        loss, seed_losses = runs.mean(label, s.depths[-1], carried)
        regret[label] = {
            "carried_log2": carried,
            "transferred_loss": loss,
            "seed_losses": seed_losses,
            "best_direct_own": min(per_depth[deepest]["loss"]),
            "best_direct_any": best_any,
            "regret": loss / best_any - 1,
        }

    results = {
        "quick": args.quick,
        "threads": args.threads,
        "setting": asdict(replace(s)),
        "parametrizations": {
            k: dict(zip(("rule", "depth_rule"), PARAMETRIZATIONS[k])) for k in s.parametrizations
        },
        "aliases": aliases,
        "sweeps": sweeps,
        "fit_window": FIT_WINDOW,
        "drift": {label: drift(v) for label, v in sweeps.items()},
        "regret": regret,
        "runs_trained": runs.trained,
        "runs_used": len(runs.used),
        "used_run_seconds": runs.used_seconds(),
        "train_seconds": runs.train_seconds,
        "total_wall": time.perf_counter() - t0,
        "load_average_start": load_start,
    }
    doc = finish("depth", results, quick=args.quick, render=render, figures=args.figures or tmp)
    print(tables(doc["results"]))
    print(headline_line(doc["results"]))
    return 0


def drift(per_depth: dict[str, Any]) -> float:
    xs = [v["optimum"]["log2"] for v in per_depth.values()]
    return max(xs) - min(xs)


# -- turning the results into docs (pure: reads only the JSON) ------------------------------------
def _depths(r: dict[str, Any]) -> list[int]:
    return [int(d) for d in r["setting"]["depths"]]


def _name(r: dict[str, Any], label: str) -> str:
    also = [a for a, b in r["aliases"].items() if b == label]
    return label + "".join(f" = {a}" for a in also)


def tables(r: dict[str, Any]) -> str:
    depths = _depths(r)
    head = (
        "| parametrization | "
        + " | ".join(f"log2 lr* @{d} blocks" for d in depths)
        + " | drift (max − min) |"
    )
    lines = [head, "|" + "---|" * (len(depths) + 2)]
    for label, per_depth in r["sweeps"].items():
        cells = []
        for d in depths:
            c = per_depth[str(d)]
            o = c["optimum"]
            ys = [as_float(y) for y in c["loss"]]
            grid_min = c["log2"][ys.index(min(ys))]
            seeds = "/".join(f"{x:.2f}" for x in c.get("seed_optima") or [])
            cells.append(
                f"{o['log2']:.2f}"
                + (" (edge)" if o["at_edge"] else "")
                + f" (grid min {grid_min:g}"
                + (f"; seeds {seeds})" if seeds else ")")
            )
        lines.append(f"| {_name(r, label)} | " + " | ".join(cells) + f" | {r['drift'][label]:.2f} |")
    reg = [
        f"| parametrization | carried log2 lr | loss @{depths[-1]} blocks | best direct, same "
        "| best direct, any | regret |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in r["regret"].items():
        lt, own, best = (as_float(row[k]) for k in ("transferred_loss", "best_direct_own", "best_direct_any"))
        reg.append(
            f"| {_name(r, label)} | {row['carried_log2']:.2f} | {lt:.4f} | {own:.4f} | {best:.4f} | "
            f"{100 * as_float(row['regret']):+.2f}% |"
        )
    return (
        "Optimum base lr (log2), wd 0:\n"
        + "\n".join(lines)
        + "\n\nTransfer regret at the deepest model:\n"
        + "\n".join(reg)
    )


def headline_line(r: dict[str, Any]) -> str:
    d, depths = r["drift"], _depths(r)
    others = ", ".join(f"{_name(r, k)} {v:.2f}" for k, v in d.items() if k != "completep")
    reg = r["regret"].get("completep", {}).get("regret")
    return (
        f"depth drift (max-min log2 lr*, depths {depths[0]}..{depths[-1]}, width {r['setting']['width']}): "
        f"completep {d['completep']:.2f} (target <= {TARGET_DRIFT}); {others}"
        + (
            f"; completep regret at {depths[-1]} blocks {100 * as_float(reg):+.2f}%"
            if reg is not None
            else ""
        )
    )


def figure(r: dict[str, Any], figures: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = r["sweeps"]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.0 * len(sweeps), 4.0), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    depths = _depths(r)
    finite = [
        y for v in sweeps.values() for c in v.values() for y in map(as_float, c["loss"]) if math.isfinite(y)
    ]
    if finite:
        lo, mid = min(finite), sorted(finite)[len(finite) // 2]
        span = max(mid - lo, 1e-3)
        axes[0][0].set_ylim(lo - 0.1 * span, lo + 3 * span)
    for ax, (label, per_depth) in zip(axes[0], sweeps.items()):
        for i, d in enumerate(depths):
            c = per_depth[str(d)]
            color = cmap(i / max(1, len(depths) - 1))
            pts = [(x, as_float(y)) for x, y in zip(c["log2"], c["loss"]) if math.isfinite(as_float(y))]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "o-",
                color=color,
                ms=3.5,
                lw=1.4,
                label=f"{d} blocks",
            )
            o = c["optimum"]
            ax.plot([o["log2"]], [as_float(o["loss"])], "*", color=color, ms=11, mec="black", mew=0.6)
        ax.set_title(f"{_name(r, label)} · drift {r['drift'][label]:.2f}", fontsize=10)
        ax.set_xlabel("log2 base learning rate")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation loss")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(
        f"byte-level LM, width {r['setting']['width']}: validation loss vs base lr per depth "
        f"({r['setting']['steps']} steps, wd 0; ★ fitted optimum)",
        fontsize=10,
    )
    path = save_figure(fig, figures, "depth_lr")
    plt.close(fig)
    return path


def render(data: dict[str, Any], figures: Path) -> str:
    """docs/results-depth.md from the results file."""
    r, env = data["results"], data["environment"]
    s = r["setting"]
    depths = _depths(r)
    n_seeds = len(s["seeds"])
    fig = figure(r, figures)
    d = r["drift"]
    reg = r["regret"]
    cp_regret = as_float(reg["completep"]["regret"]) if "completep" in reg else None
    edges = [
        f"{label} @{dd}" for label, v in r["sweeps"].items() for dd, c in v.items() if c["optimum"]["at_edge"]
    ]
    edge_text = (
        f"**Optima at the grid edge** (drift there is a lower bound): {', '.join(edges)}."
        if edges
        else "Every optimum is interior to its grid."
    )
    wall = as_float(r["total_wall"])
    resumed = r["runs_trained"] < r["runs_used"]  # some runs came from the cache of an earlier session
    used_min = as_float(r.get("used_run_seconds", r["train_seconds"])) / 60
    aliases = r["aliases"]
    alias_text = (
        " ".join(
            f"`{a}` plans exactly what `{b}` plans at every depth here (checked from the plans), so it was "
            "trained once and is reported under both names."
            for a, b in aliases.items()
        )
        if aliases
        else "No two parametrizations planned the same runs."
    )

    sp_label = "sp" if "sp" in d else next(iter(d))
    spreads = [
        max(c["seed_optima"]) - min(c["seed_optima"])
        for v in r["sweeps"].values()
        for c in v.values()
        if len(c.get("seed_optima") or []) > 1
    ]
    median = sorted(spreads)[len(spreads) // 2] if spreads else 0.0
    noise_text = (
        f"**Noise.** Fitted on each seed's curve alone, the optimum at one depth differs between the "
        f"{len(s['seeds'])} seeds by up to {max(spreads):.2f} log2 (median {median:.2f}); "
        "drifts, and differences between drifts, smaller than that are within this benchmark's noise."
        if spreads
        else "One seed: no seed-to-seed spread measured."
    )
    trend_text = _trend_text(r["sweeps"], depths)
    deepest = str(depths[-1])
    best_at = {k: min(as_float(y) for y in v[deepest]["loss"]) for k, v in r["sweeps"].items()}
    verdict_parts = [
        "CompleteP's drift ({:.2f}) is {} SP's ({:.2f}).".format(
            d["completep"], "below" if d["completep"] < d[sp_label] else "not below", d[sp_label]
        )
        if "completep" in d and sp_label != "completep"
        else ""
    ]
    if "completep" in best_at and sp_label in best_at and sp_label != "completep":
        gap = best_at["completep"] / best_at[sp_label] - 1
        verdict_parts.append(
            f"At {deepest} blocks the best loss in CompleteP's sweep is {best_at['completep']:.4f}, "
            f"{100 * gap:+.2f}% against SP's {best_at[sp_label]:.4f}; the base-depth lr carried there "
            f"costs CompleteP {100 * as_float(reg['completep']['regret']):+.2f}% and SP "
            f"{100 * as_float(reg[sp_label]['regret']):+.2f}% against the best of any."
        )
    base = str(s["base_depth"])
    deeper = [dd for dd in map(str, depths) if dd != base]
    if len(deeper) >= 2:
        spans = {
            k: max(v[dd]["optimum"]["log2"] for dd in deeper) - min(v[dd]["optimum"]["log2"] for dd in deeper)
            for k, v in r["sweeps"].items()
        }
        verdict_parts.append(
            f"Leaving out the base depth ({base} blocks, optimum "
            f"{r['sweeps'][sp_label][base]['optimum']['log2']:.2f}), the optima over "
            f"{deeper[0]}-{deeper[-1]} blocks span "
            + ", ".join(f"{_name(r, k)} {v:.2f}" for k, v in spans.items())
            + " log2."
        )
    verdict = " ".join(p for p in verdict_parts if p)

    def ok(flag: bool) -> str:
        return "met" if flag else "**missed**"

    target_rows = [
        (
            f"lr drift ≤ {TARGET_DRIFT} log2 over depths {depths[0]} → {depths[-1]} under CompleteP",
            f"{d['completep']:.2f}",
            d["completep"] <= TARGET_DRIFT,
        ),
        (
            f"regret ≤ 1% at {depths[-1]} blocks with the base-depth lr (CompleteP) vs the best "
            "direct loss of any parametrization",
            "n/a" if cp_regret is None else f"{100 * cp_regret:+.2f}%",
            cp_regret is not None and cp_regret <= TARGET_REGRET,
        ),
        (
            f"full run ≤ {TARGET_MINUTES} min on the shared 2-core machine",
            f"{wall / 60:.1f} min"
            if not resumed
            else f"{used_min:.1f} min of training summed over every run used (resumed: "
            f"{wall / 60:.1f} min wall in the last session)",
            (used_min if resumed else wall / 60) <= TARGET_MINUTES,
        ),
    ]
    targets = "\n".join(
        ["| target | measured | |", "|---|---|---|"] + [f"| {a} | {b} | {ok(c)} |" for a, b, c in target_rows]
    )
    compare = ", ".join(f"{_name(r, k)} {v:.2f}" for k, v in d.items())
    params_text = ", ".join(
        f"`{k}` (width rule `{v['rule']}`, depth rule `{v['depth_rule']}`)"
        for k, v in r["parametrizations"].items()
    )
    train_min = as_float(r["train_seconds"]) / 60
    load_start = ", ".join(map(str, r.get("load_average_start") or [])) or "unknown"
    swept_names = {"sp": "SP", "mup": "width-only muP", "depth-mup": "depth-muP", "completep": "CompleteP"}
    title = ", ".join(swept_names.get(k, k) for k in r["parametrizations"])
    dmup = (
        "depth-muP (1/sqrt(L/L_base) on the branch and on the block lr) sits between"
        if "depth-mup" in r["sweeps"]
        else "depth-muP (1/sqrt(L/L_base) on branch and block lr) was not swept in this run (`--depth-mup`)"
    )
    return f"""# Depth evidence: optimum lr across depths ({title})

Generated from `benchmarks/results/depth.json`, written by `{command_line(data)}`
({"smoke run: not evidence" if r["quick"] else "full run"}).

## Targets

{targets}

Drift (max − min of log2 lr* over all depths): {compare}.

## Setup

* **Task**: the built-in byte-level LM (`hptransfer.data.CharLM`, vocab 128), {s["val_sequences"]}
  fixed validation windows of {s["seq_len"]} tokens.
* **Model**: `hptransfer.models.TinyLlama` at width **{s["width"]}** (head_dim {s["head_dim"]}),
  **{", ".join(map(str, depths))} blocks**, base depth {s["base_depth"]}; built by
  `build_model("llama", width, plan)`, which takes depth and residual multiplier from
  `suggest(config, width, depth=L)`. Init std {s["init_std"]} (embeddings too), zero readout.
* **Training**: `hptransfer.training.train_proxy`, AdamW over the plan's groups, batch
  {s["batch_size"]} × {s["seq_len"]} tokens, {s["steps"]} steps, cosine schedule with 10% warmup,
  **weight decay 0**, Adam epsilon not scaled. Seeds {", ".join(map(str, s["seeds"]))}; a point's
  loss is the seed mean (a diverged seed makes the point diverged).
* **Optima table**: the fitted optimum (the drift is computed from it), then the grid point with
  the lowest seed-mean loss and the optimum fitted to each seed's curve alone.
* **Grid**: log2 lr from {", ".join(f"{x:g}" for x in s["start_log2"])}, grown by 1 on the side of the
  minimum until it is interior (bounds {s["bounds"][0]:g}, {s["bounds"][1]:g}). Optimum: parabola
  through the grid minimum and {r["fit_window"]} grid points either side; the sweep grows until
  they exist. {edge_text}
* **Parametrizations**: {params_text}.
  The width is the base width, so width rules change nothing here: {alias_text}
* **Regret**: each parametrization's base-depth optimum carried to {depths[-1]} blocks ({n_seeds} seeds),
  against the best seed-mean grid loss any parametrization reached there.
* **Cost**: {r["runs_used"]} distinct runs, {r["runs_trained"]} of them trained in this session
  ({train_min:.1f} min of training), {wall / 60:.1f} min wall, {r["threads"]} torch thread(s); load
  average at the start {load_start}.

## Optima and regret

{tables(r)}

![validation loss against base lr per depth]({fig})

## What it says

CompleteP multiplies each residual branch by L_base/L, so a deep model's update to the residual
stream keeps the size it had at the base depth; {dmup}; SP lets the branches add up. Here:
{verdict}

{noise_text}

{trend_text}

## Environment

{environment_table(env)}
"""


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _trend_text(sweeps: dict[str, Any], depths: list[int]) -> str:
    """The optimum's slope per doubling of depth, per parametrization: fitted to each seed's own
    optima, mean ± standard error over seeds (a trend, unlike noise, has the same sign on every
    seed)."""
    xs = [math.log2(dep) for dep in depths]
    parts = []
    for label, per in sweeps.items():
        seeds = [per[str(dep)].get("seed_optima") or [] for dep in depths]
        n = min(len(o) for o in seeds)
        if n < 2:
            continue
        slopes = [_slope(xs, [as_float(o[k]) for o in seeds]) for k in range(n)]
        mean = sum(slopes) / n
        se = math.sqrt(sum((v - mean) ** 2 for v in slopes) / (n - 1) / n)
        same = sum(v < 0 for v in slopes) if mean < 0 else sum(v > 0 for v in slopes)
        parts.append(f"{label} {mean:+.2f} ± {se:.2f} ({same} of {n} seeds {'<' if mean < 0 else '>'} 0)")
    if not parts:
        return ""
    return (
        "**Trend.** The optimum's slope per doubling of depth, fitted to each seed's own optima (mean ± "
        "standard error over seeds): " + "; ".join(parts) + ". A slope more than twice its standard error "
        "from 0, with the same sign on most seeds, is a drift the depth rule leaves, not noise; over "
        f"{math.log2(depths[-1] / depths[0]):g} doublings ({depths[0]} → {depths[-1]} blocks) it adds up to "
        f"{math.log2(depths[-1] / depths[0]):g} times the slope."
    )


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    d, depths = r["drift"], _depths(r)
    others = ", ".join(f"{_name(r, k)} {v:.2f}" for k, v in d.items() if k != "completep")
    reg = r["regret"].get("completep", {}).get("regret")
    return [
        (
            f"optimum base lr drift over depths {depths[0]} → {depths[-1]} blocks, CompleteP (≤ 0.5 log2)",
            f"**{d['completep']:.2f}** ({others})"
            + (f"; regret at {depths[-1]} blocks {100 * as_float(reg):+.2f}%" if reg is not None else ""),
            "`python3 benchmarks/depth.py`",
        )
    ]


if __name__ == "__main__":
    raise SystemExit(main())
