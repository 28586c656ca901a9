"""Muon benchmark: does the optimum base lr stay put across 8x width under Muon, beside AdamW?

On the built-in byte-level LM task (a 2-block LLaMA-style decoder, ``train_proxy("charlm", ...)``),
learning-rate sweeps across widths for three setups, every run through hptransfer's adapter and
``build_optimizer``:

* ``muon-mup``: ``optimizer = "muon"`` under our muP rule: ``torch.optim.Muon`` on hidden matrices
  (``adjust_lr_fn="original"``, hidden lr the same at every width: Muon's update is orthogonal,
  its spectral norm does not grow with width), AdamW with muP's rows for embeddings, norms and
  the readout (readout lr/m);
* ``adamw-mup``: the same muP rule with AdamW everywhere (hidden lr/m), the project's default;
* ``muon-sp``: Muon under SP (readout lr and init stds the same at every width), the baseline
  that shows what the muP rows add under Muon.

The swept value is the base lr (all classes move together, as a user's one lr does;
``hidden_lr_mult`` fixed). The optimum per width is a parabola in log2 lr around the grid
minimum; drift is max − min of log2 lr* over *all* widths; regret is the loss at the widest width
with the smallest width's optimum against the best loss of *any* setup swept at the widest width.

Every run is an Optuna trial in a SQLite study under ``--cache`` (default
``benchmarks/.muon-cache``), so a killed benchmark resumes.

Run:  python3 benchmarks/muon.py            (full; writes benchmarks/results/muon.json)
      python3 benchmarks/muon.py --quick    (smoke run, seconds; writes nothing)

Then ``python3 benchmarks/render_docs.py`` writes docs/results-muon.md and its figure. The last
printed line is the headline: the Muon lr drift against its target (≤ 0.5 log2), beside AdamW's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _results, also when imported by path
from _results import (
    as_float,
    command_line,
    environment_table,
    finish,
    fmt,
    minutes,
    save_figure,
)
from _sweeps import best_direct, setting_widths, sweep_entry
from hptransfer.scaling import ProxyConfig
from hptransfer.training import train_proxy
from hptransfer.tuning.sweep import SweepResult, SweepSpec, log2_grid, run_sweep, summarise

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    widths: tuple[int, ...]
    head_dim: int
    depth: int
    seq_len: int
    batch_size: int
    lr_grid: tuple[float, ...]
    steps: int
    init_std: float
    hidden_lr_mult: float
    val_sequences: int = 256


FULL = Setting(
    widths=(32, 64, 128, 256),
    head_dim=8,
    depth=2,
    seq_len=32,
    batch_size=16,
    lr_grid=log2_grid(-9, -3),
    steps=200,
    init_std=0.1,
    hidden_lr_mult=1.0,
)
QUICK = Setting(
    widths=(16, 32),
    head_dim=8,
    depth=1,
    seq_len=16,
    batch_size=4,
    lr_grid=log2_grid(-8, -4, 2),
    steps=3,
    init_std=0.1,
    hidden_lr_mult=1.0,
    val_sequences=8,
)

FIT_WINDOW = 2
#: setup -> (optimizer, rule)
SETUPS: dict[str, tuple[str, str]] = {
    "muon-mup": ("muon", "mup"),
    "adamw-mup": ("adamw", "mup"),
    "muon-sp": ("muon", "sp"),
}
TARGET_DRIFT, TARGET_REGRET, TARGET_MINUTES = 0.5, 0.01, 25


def base_config(s: Setting, setup: str) -> ProxyConfig:
    """Init pinned explicitly (matrices and embeddings N(0, std²), zero readout), wd 0."""
    optimizer, rule = SETUPS[setup]
    return ProxyConfig(
        name=f"bench-{setup}",
        base_width=s.widths[0],
        head_dim=s.head_dim,
        lr=2.0**-6,
        weight_decay=0.0,
        rule=rule,
        optimizer=optimizer,
        hidden_lr_mult=s.hidden_lr_mult if optimizer == "muon" else 1.0,
        init_std=s.init_std,
        embed_init_std=s.init_std,
        output_init_std=0.0,
    )


def model_kwargs(s: Setting) -> dict[str, Any]:
    return {"depth": s.depth, "head_dim": s.head_dim, "seq_len": s.seq_len}


def spec_for(s: Setting, setup: str) -> SweepSpec:
    return SweepSpec(
        task="charlm",
        rule=SETUPS[setup][1],
        widths=s.widths,
        param="lr",
        grid=s.lr_grid,
        seeds=(0,),
        steps=s.steps,
        batch_size=s.batch_size,
        config=base_config(s, setup),
        data_kwargs={"val_sequences": s.val_sequences},
        model_kwargs=model_kwargs(s),
        schedule="cosine",
        warmup=max(1, s.steps // 10),
    )


def sweep(s: Setting, setup: str, cache: Path | None, progress: bool) -> SweepResult:
    """One lr sweep; ``cache=None`` keeps the study in memory (quick mode)."""
    spec = spec_for(s, setup)
    out = cache / setup if cache is not None else None
    res = run_sweep(spec, out, study_name=setup, progress=progress, plot=False)
    return summarise(res.spec, res.records, window=FIT_WINDOW)


def transfer_loss(s: Setting, setup: str, lr: float, cache: Path | None) -> float:
    """Validation loss at the widest width with base lr ``lr`` (seed 0), cached by key."""
    store = cache / "transfer_runs.json" if cache is not None else None
    runs = json.loads(store.read_text()) if store is not None and store.exists() else {}
    key = f"{setup}|{lr:.6g}|{s.widths[-1]}|{s.steps}"
    if key not in runs:
        spec = spec_for(s, setup)
        res = train_proxy(
            "charlm",
            s.widths[-1],
            replace(base_config(s, setup), lr=lr),
            rule=SETUPS[setup][1],
            steps=spec.steps,
            batch_size=spec.batch_size,
            seed=0,
            data_kwargs=spec.data_kwargs,
            model_kwargs=spec.model_kwargs,
            schedule=spec.schedule,
            warmup=spec.warmup,
        )
        runs[key] = res.val_loss
        if store is not None:
            store.write_text(json.dumps(runs, indent=1))
    return float(runs[key])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run in seconds (saves no results)")
    ap.add_argument("--cache", type=Path, default=None, help="sweep studies (resumable)")
    ap.add_argument("--figures", type=Path, default=None, help="--quick: where the rendered figures go")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help=f"comma-separated subset of {', '.join(SETUPS)} (muon-mup and adamw-mup are needed)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    setups = [x.strip() for x in args.setups.split(",") if x.strip()]
    unknown = [x for x in setups if x not in SETUPS]
    if unknown or not {"muon-mup", "adamw-mup"} <= set(setups):
        ap.error(f"--setups: unknown {unknown}; muon-mup and adamw-mup are required")
    tmp = Path(tempfile.mkdtemp(prefix="hpt-muon-")) if args.quick else None
    cache = None if args.quick else (args.cache or ROOT / "benchmarks" / ".muon-cache")
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    w0, w1 = s.widths[0], s.widths[-1]
    print(
        f"muon benchmark ({'quick' if args.quick else 'full'}): charlm, widths {list(s.widths)} "
        f"({w1 // w0}x), depth {s.depth}, head_dim {s.head_dim}, seq {s.seq_len}, batch {s.batch_size}, "
        f"{s.steps} steps, setups {', '.join(setups)}"
    )
    results_by: dict[str, SweepResult] = {}
    seconds: dict[str, float] = {}
    for setup in setups:
        t = time.perf_counter()
        results_by[setup] = sweep(s, setup, cache, progress)
        seconds[setup] = time.perf_counter() - t
        print(f"{setup}: drift {sweep_entry(results_by[setup])['drift']}", flush=True)

    t = time.perf_counter()
    best_any = min(best_direct(res, w1) for res in results_by.values())
    regret_rows = []
    for setup, res in results_by.items():
        if w0 not in res.optima:
            continue
        carried = res.optima[w0]
        lt = transfer_loss(s, setup, carried.value, cache)
        regret_rows.append(
            {
                "setup": setup,
                "carried_log2": carried.log2,
                "transferred_loss": lt,
                "best_direct_own": best_direct(res, w1),
                "best_direct_any": best_any,
            }
        )
    seconds["transfer_runs"] = time.perf_counter() - t
    seconds["total_wall"] = time.perf_counter() - t0

    results = {
        "quick": args.quick,
        "threads": args.threads,
        "setting": {k: list(v) if isinstance(v, tuple) else v for k, v in s.__dict__.items()},
        "fit_window": FIT_WINDOW,
        "setups": {k: {"optimizer": SETUPS[k][0], "rule": SETUPS[k][1]} for k in setups},
        "lr": {k: sweep_entry(v) for k, v in results_by.items()},
        "regret": regret_rows,
        "seconds": seconds,
        "load_average_start": load_start,
    }
    doc = finish("muon", results, quick=args.quick, render=render, figures=args.figures or tmp)
    print(optimum_table(doc["results"]))
    print(regret_table(doc["results"]))
    print(headline_line(doc["results"]))
    return 0


# -- turning the results into docs (pure: reads only the JSON) ------------------------------------
def optimum_table(r: dict[str, Any]) -> str:
    widths = setting_widths(r)
    head = "| setup | " + " | ".join(f"log2 lr* @{w}" for w in widths) + " | drift (max − min) |"
    lines = [head, "|" + "---|" * (len(widths) + 2)]
    for setup, entry in r["lr"].items():
        cells = []
        for w in widths:
            o = entry["optima"].get(str(w))
            cells.append(
                "diverged" if o is None else f"{o['log2']:.2f}" + (" (edge)" if o["at_edge"] else "")
            )
        lines.append(f"| {setup} | " + " | ".join(cells) + f" | {fmt(entry['drift'])} |")
    return "\n".join(lines)


def _regret(r: dict[str, Any], setup: str) -> float | None:
    for row in r["regret"]:
        if row["setup"] == setup:
            return as_float(row["transferred_loss"]) / as_float(row["best_direct_any"]) - 1
    return None


def regret_table(r: dict[str, Any]) -> str:
    lines = [
        "| setup | carried log2 lr | transferred loss | best direct, same setup | best direct, any setup "
        "| regret vs any setup |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["regret"]:
        lt, own, best = (as_float(row[k]) for k in ("transferred_loss", "best_direct_own", "best_direct_any"))
        lines.append(
            f"| {row['setup']} | {row['carried_log2']:.2f} | {lt:.4f} | {own:.4f} | {best:.4f} | "
            f"{100 * (lt / best - 1):+.2f}% |"
        )
    return "\n".join(lines)


def headline_line(r: dict[str, Any]) -> str:
    widths = setting_widths(r)
    w0, w1 = widths[0], widths[-1]
    d = {k: v["drift"] for k, v in r["lr"].items()}
    ratio = d["adamw-mup"] / d["muon-mup"] if d.get("adamw-mup") is not None and d.get("muon-mup") else None
    met = d["muon-mup"] is not None and d["muon-mup"] <= TARGET_DRIFT
    extra = f", muon under sp {fmt(d['muon-sp'])}" if "muon-sp" in d else ""
    return (
        f"Muon lr drift (max-min log2 lr*, widths {w0}..{w1}, {w1 // w0}x): muon-mup {fmt(d['muon-mup'])} "
        f"(target <= {TARGET_DRIFT}: {'met' if met else 'MISSED'}); adamw-mup {fmt(d['adamw-mup'])}"
        + (f" ({ratio:.2f}x muon's)" if ratio is not None else "")
        + extra
    )


def figure(r: dict[str, Any], figures: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = r["lr"]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.2 * len(sweeps), 4.2), squeeze=False)
    cmap = plt.get_cmap("viridis")
    finite_all = [
        as_float(y)
        for e in sweeps.values()
        for c in e["curves"].values()
        for y in c["loss"]
        if math.isfinite(as_float(y))
    ]
    for ax, (setup, entry) in zip(axes[0], sweeps.items()):
        widths = sorted(entry["curves"], key=int)
        if finite_all:
            lo = min(finite_all)
            mid = sorted(finite_all)[len(finite_all) // 2]
            span = max(mid - lo, 1e-3)
            ax.set_ylim(lo - 0.1 * span, lo + 3.25 * span)
        for i, w in enumerate(widths):
            color = cmap(i / max(1, len(widths) - 1))
            xs, ys = entry["curves"][w]["log2"], [as_float(y) for y in entry["curves"][w]["loss"]]
            ax.plot(
                [x for x, y in zip(xs, ys) if math.isfinite(y)],
                [y for y in ys if math.isfinite(y)],
                "o-",
                color=color,
                ms=3.5,
                lw=1.4,
                label=f"width {w}",
            )
            o = entry["optima"].get(w)
            if o is not None:
                ax.plot([o["log2"]], [o["loss"]], "*", color=color, ms=11, mec="black", mew=0.6)
        ax.set_title(f"{setup} · drift {fmt(entry['drift'])}", fontsize=10)
        ax.set_xlabel("log2 base learning rate")
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"byte-level LM, validation loss vs log2 base lr ({r['setting']['steps']} steps, wd 0)")
    fig.tight_layout()
    path = save_figure(fig, figures, "muon_lr")
    plt.close(fig)
    return path


def render(data: dict[str, Any], figures: Path) -> str:
    """docs/results-muon.md from the results file."""
    r, env = data["results"], data["environment"]
    s = r["setting"]
    widths = setting_widths(r)
    w0, w1 = widths[0], widths[-1]
    fig = figure(r, figures)
    d = {k: v["drift"] for k, v in r["lr"].items()}
    sec = r["seconds"]
    wall = sec["total_wall"]
    runs = sum(v["runs"] for v in r["lr"].values())
    run_s = sum(v["run_seconds"] for v in r["lr"].values())
    resumed = run_s > wall * max(1, r["threads"]) * 1.05
    cores = env.get("cpu_count") or 1
    loads = [*(r.get("load_average_start") or []), *(env.get("load_average") or [])]
    load_start = ", ".join(str(x) for x in r.get("load_average_start") or []) or "unknown"
    busy_text = (
        f" The load exceeded the {cores} cores, so the wall time measures the contention as much as the"
        " benchmark."
        if loads and max(loads) > cores
        else ""
    )
    edges = [f"{k} @{w}" for k, e in r["lr"].items() for w, o in e["optima"].items() if o["at_edge"]]
    edge_text = (
        "**Optima at the grid edge** (the true optimum may lie outside the grid, so drift there is "
        f"a lower bound): {', '.join(edges)}."
        if edges
        else "Every optimum is interior to its grid."
    )
    regret_muon, regret_adamw = _regret(r, "muon-mup"), _regret(r, "adamw-mup")
    grid = s["lr_grid"]
    lo, hi = math.log2(grid[0]), math.log2(grid[-1])

    def ok(flag: bool) -> str:
        return "met" if flag else "**missed**"

    pct = lambda x: fmt(None if x is None else 100 * x, "+.2f") + "%"  # noqa: E731
    rows = [
        (
            f"Muon (muP rule) lr drift ≤ {TARGET_DRIFT} log2 over {w1 // w0}× width",
            fmt(d["muon-mup"]),
            d["muon-mup"] is not None and d["muon-mup"] <= TARGET_DRIFT,
        ),
        (
            f"AdamW (muP rule), same runs: lr drift ≤ {TARGET_DRIFT} log2",
            fmt(d["adamw-mup"]),
            d["adamw-mup"] is not None and d["adamw-mup"] <= TARGET_DRIFT,
        ),
        (
            "Muon lr regret at the widest width ≤ 1% vs the best direct loss of any setup",
            pct(regret_muon),
            regret_muon is not None and regret_muon <= TARGET_REGRET,
        ),
        (
            f"full run < {TARGET_MINUTES} min",
            minutes(wall) + (" (resumed)" if resumed else ""),
            wall < TARGET_MINUTES * 60 and not resumed,
        ),
    ]
    targets = "\n".join(
        ["| target | measured | |", "|---|---|---|"] + [f"| {a} | {b} | {ok(c)} |" for a, b, c in rows]
    )
    sp_text = (
        f"Under SP the optimum moves by **{fmt(d['muon-sp'])} log2** with Muon: Muon's own hidden-matrix "
        "scaling is the same in both (lr constant in width), so the difference is what muP's rows for "
        "the readout (lr/m) and the init (hidden std ∝ 1/sqrt(fan-in), zero readout) add."
        if "muon-sp" in d
        else "SP with Muon was not run."
    )
    return f"""# Muon: optimum lr across widths, beside AdamW

Generated from `benchmarks/results/muon.json`, written by `{command_line(data)}`
({"smoke run: not evidence" if r["quick"] else "full run"}).

## Targets

{targets}

## Setup

* **Task**: the built-in byte-level LM (`train_proxy("charlm", ...)`, vocab 128), {s["val_sequences"]}
  fixed validation windows of {s["seq_len"]} tokens.
* **Model**: `hptransfer.models.TinyLlama`, {s["depth"]} blocks, head_dim {s["head_dim"]} fixed (heads grow
  with width), zero-initialised readout, init std {s["init_std"]} at the base width. Widths
  **{", ".join(map(str, widths))} ({w1 // w0}×)**, base width {w0}.
* **Training**: {s["steps"]} steps, batch {s["batch_size"]} × {s["seq_len"]} tokens, cosine schedule with
  10% warmup, weight decay 0, one seed (0) per point. Every run goes through `parametrize` and
  `build_optimizer`; under `optimizer = "muon"` that is one `MuonAdamW`: `torch.optim.Muon`
  (momentum 0.95, Nesterov, 5 Newton–Schulz steps, `adjust_lr_fn="original"`) on the hidden
  matrices, `torch.optim.AdamW` on embeddings, norm gains and the readout.
* **Swept**: the base lr, 2^{lo:g} … 2^{hi:g} in steps of one octave; every class moves with it
  (Muon's matrices at `lr × hidden_lr_mult`, hidden_lr_mult = {s["hidden_lr_mult"]:g}).
* **Setups**: {", ".join(f"`{k}` ({v['optimizer']}, rule `{v['rule']}`)" for k, v in r["setups"].items())}.
  Under `mup` Muon's hidden lr is the same at every width (the orthogonalised update has spectral
  norm ≈ lr·sqrt(max(1, fan_out/fan_in)), already width-free), AdamW's hidden lr is lr/m, and
  both take the readout at lr/m.
* **Optimum**: parabola in log2 lr fitted to the grid minimum and {r["fit_window"]} points either side.
  **Drift = max − min of the optimum over all widths.**

## Optimum base lr per width

{optimum_table(r)}

![lr sweeps]({fig})

{edge_text} {sp_text}

## Transfer regret (width {w1}, lr carried from width {w0})

{regret_table(r)}

"Transferred loss" trains width {w1} at the optimum fitted at width {w0}. "Best direct" is the lowest
grid point of a sweep at width {w1}; the regret is against the best of *any* setup swept there
(AdamW's regret therefore includes Muon's lead: {pct(regret_adamw)}).

## Run time

{runs} sweep runs plus {len(r["regret"])} transfer runs, {r["threads"]} torch thread(s):
{", ".join(f"{k} {minutes(v)}" for k, v in sec.items() if k != "total_wall")}; **{minutes(wall)} wall**
(summed run time {minutes(run_s)}{"; runs resumed from an earlier session" if resumed else ""}). The
load average was {load_start} at the start (1, 5, 15 min) and is in the environment table for the
end.{busy_text}

## Limits

* Small widths ({w0}–{w1}), short runs and one seed per point: drift differences below ~0.3 log2
  and regret differences below ~0.5% are within run-to-run noise.
* Weight decay 0: Muon's weight-decay rule (``lr·wd`` per step kept, so hidden wd ∝ m^(e−1)) is
  not measured here.
* ``adjust_lr_fn="match_rms_adamw"`` (hidden lr ∝ m^-1/2 under our rule) is not measured here.

## Environment

{environment_table(env)}
"""


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    widths = setting_widths(r)
    d = {k: v["drift"] for k, v in r["lr"].items()}
    pct = lambda x: fmt(None if x is None else 100 * x, "+.2f") + "%"  # noqa: E731
    sp = f"; Muon under SP {fmt(d['muon-sp'])}" if "muon-sp" in d else ""
    return [
        (
            f"optimum base lr drift under Muon (muP rule) over {widths[-1] // widths[0]}× width (≤ 0.5)",
            f"**{fmt(d['muon-mup'])}** (AdamW, same rule and runs: {fmt(d['adamw-mup'])}{sp})",
            "`python3 benchmarks/muon.py`",
        ),
        (
            "Muon lr transfer regret at the widest width vs the best direct loss of any setup (≤ 1%)",
            f"**{pct(_regret(r, 'muon-mup'))}** (AdamW {pct(_regret(r, 'adamw-mup'))})",
            "`python3 benchmarks/muon.py`",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
