"""Tune on a narrow proxy and transfer, vs tune directly at the target width (same trial count).

Built-in char-level LM (TinyLlama, 2 blocks, head_dim 16, next-byte prediction on stdlib
sources). Two Optuna studies (TPE, independent seeds) with the same number of trials over the same
base hyperparameters (base lr and output multiplier, log scales):

* proxy: trials at ``--proxy-width``; its best trial carried to ``--target-width`` by
  ``best_plan`` (rule mup-wd-linear) and trained once there;
* direct: trials at ``--target-width``.

Figures: regret of the transferred run against the direct study's best at the target width
(target <= 1 %), cost ratio of the two tuning runs (CPU time of this single-threaded process, same run: the
machine is shared and wall time swings with its load; the proxy side includes its one training run
at the target width), and the per-trial overhead of
``TransferObjective`` against a bare Optuna objective doing the same sampling (target < 1 % of a
proxy trial's time).

The full run also trains a grid of base lr at both widths (``--no-lr-sweep`` skips it), to tell
optimum drift from search luck.

Run:  python3 benchmarks/optuna_transfer.py          (30 trials; writes benchmarks/results/)
      python3 benchmarks/optuna_transfer.py --quick  (smoke run, a few seconds; writes nothing)

``python3 benchmarks/render_docs.py`` then writes docs/results-optuna.md and its figures.
The last line is the headline figure.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _results, also when imported by path
from _results import command_line, environment_table, result_document, save_figure, save_results
from hptransfer.scaling import suggest
from hptransfer.tuning import (
    Range,
    SearchSpace,
    TransferObjective,
    best_config,
    best_plan,
    open_study,
)
from hptransfer.tuning.builtin import builtin_trainer, resolve_model

DOC = "optuna"  # docs/results-optuna.md

SPACE = SearchSpace({"lr": Range(2.0**-10, 2.0**-2), "output_mult": Range(2.0**-3, 2.0**3)})


def run_study(name: str, url: str, train, cfg, width: int, trials: int, steps: int, seed: int):
    study = open_study(
        name,
        cfg,
        storage=url,
        space=SPACE,
        proxy_width=width,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, trials // 3)),
        pruner=optuna.pruners.NopPruner(),
    )
    objective = TransferObjective(train, cfg, width=width, space=SPACE, steps=steps)
    start, cpu = time.perf_counter(), time.process_time()
    study.optimize(objective, n_trials=trials)
    return study, time.perf_counter() - start, time.process_time() - cpu


def overhead(url: str, cfg, width: int, n: int = 30) -> tuple[float, float]:
    """Seconds per trial of TransferObjective and of a bare objective, both doing no training
    (the difference is what the wrapper adds to every trial), on the same kind of storage."""

    def bare(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 2.0**-10, 2.0**-2, log=True)
        mult = trial.suggest_float("output_mult", 2.0**-3, 2.0**3, log=True)
        return lr * mult

    wrapped = TransferObjective(lambda plan, trial: plan.base_lr, cfg, width=width, space=SPACE)
    times = {}
    for label, fn in (("bare", bare), ("wrapped", wrapped), ("bare2", bare), ("wrapped2", wrapped)):
        study = optuna.create_study(
            study_name=f"overhead-{label}", storage=url, sampler=optuna.samplers.RandomSampler(seed=0)
        )
        start = time.perf_counter()
        study.optimize(fn, n_trials=n)
        times[label] = (time.perf_counter() - start) / n
    return min(times["wrapped"], times["wrapped2"]), min(times["bare"], times["bare2"])


def trials_of(study: optuna.Study) -> list[dict[str, Any]]:
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": dict(t.params),
            "seconds": t.duration.total_seconds() if t.duration is not None else None,
        }
        for t in study.trials
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: tiny widths, few trials/steps; saves nothing"
    )
    ap.add_argument("--proxy-width", type=int, default=32)
    ap.add_argument("--target-width", type=int, default=256)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lr-sweep", action="store_true", help="skip the base-lr grid at both widths")
    ap.add_argument("--figures", type=Path, default=None, help="--quick: where the rendered figures go")
    args = ap.parse_args(argv)
    if args.quick:
        args.proxy_width, args.target_width, args.trials, args.steps = 16, 64, 4, 15
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    choice = resolve_model("llama")
    cfg = choice.config  # base width 64, rule mup-wd-linear, explicit init
    seq_len, batch, val_sequences = 32, 32, 256
    train = builtin_trainer(
        choice,
        batch_size=batch,
        seed=args.seed,
        data_kwargs={"seq_len": seq_len, "val_sequences": val_sequences},
        model_kwargs={"seq_len": seq_len},
    )
    print(
        f"task charlm (TinyLlama, depth 2, head_dim 16, seq {seq_len}, batch {batch}), {args.steps} steps "
        f"a run, {args.trials} TPE trials a study over base lr and output multiplier; rule {cfg.rule}, "
        f"base width {cfg.base_width}; torch threads 1"
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        proxy, t_proxy, c_proxy = run_study(
            "proxy", url, train, cfg, args.proxy_width, args.trials, args.steps, args.seed
        )
        print(f"proxy study at width {args.proxy_width}: best {proxy.best_value:.4f}, {c_proxy:.1f} s CPU")
        plan = best_plan(proxy, args.target_width)
        start, cpu = time.perf_counter(), time.process_time()
        transferred = train(plan, optuna.trial.FixedTrial({}), steps=args.steps, config=best_config(proxy))
        t_final, c_final = time.perf_counter() - start, time.process_time() - cpu
        print(f"transferred to width {args.target_width}: loss {transferred:.4f}")
        # another sampler seed: an independent search (with the same seed TPE would replay the
        # proxy's sequence whenever the trials rank alike, and the comparison would be circular)
        direct, t_direct, c_direct = run_study(
            "direct", url, train, cfg, args.target_width, args.trials, args.steps, args.seed + 1
        )
        print(
            f"direct study at width {args.target_width}: best {direct.best_value:.4f}, {c_direct:.1f} s CPU"
        )
        default = train(
            suggest(cfg, args.target_width), optuna.trial.FixedTrial({}), steps=args.steps, config=cfg
        )
        t_wrapped, t_bare = overhead(url, cfg, args.proxy_width)
        sides = {}
        for key, study, width, wall, cpu_s in (
            ("proxy", proxy, args.proxy_width, t_proxy, c_proxy),
            ("direct", direct, args.target_width, t_direct, c_direct),
        ):
            sides[key] = {
                "width": width,
                "best_value": study.best_value,
                "best_params": dict(study.best_params),
                "best_base_lr": best_config(study).lr,
                "wall_seconds": wall,
                "cpu_seconds": cpu_s,
                "trials": trials_of(study),
            }

    lr_sweep = None
    if not args.no_lr_sweep and not args.quick:
        exps = [-11, -10, -9, -8, -7, -6]
        lr_sweep = {"log2_lr": exps, "output_mult": 6.0, "loss": {}}
        for width in (args.proxy_width, args.target_width):
            losses = []
            for e in exps:
                c = replace(cfg, lr=2.0**e, output_mult=6.0)
                losses.append(
                    train(suggest(c, width), optuna.trial.FixedTrial({}), steps=args.steps, config=c)
                )
            lr_sweep["loss"][str(width)] = losses
            print(f"lr sweep at width {width}: " + ", ".join(f"2^{e}: {v:.4f}" for e, v in zip(exps, losses)))

    results = {
        "quick": args.quick,
        "seed": args.seed,
        "trials": args.trials,
        "steps": args.steps,
        "task": {
            "model": "llama",
            "depth": 2,
            "head_dim": 16,
            "seq_len": seq_len,
            "batch_size": batch,
            "val_sequences": val_sequences,
        },
        "config": {"rule": cfg.rule, "base_width": cfg.base_width, "weight_decay": cfg.weight_decay},
        "space": {"lr": [2.0**-10, 2.0**-2], "output_mult": [2.0**-3, 2.0**3]},
        "proxy_width": args.proxy_width,
        "target_width": args.target_width,
        "proxy": sides["proxy"],
        "direct": sides["direct"],
        "transferred": {
            "loss": transferred,
            "wall_seconds": t_final,
            "cpu_seconds": c_final,
            "hidden_lr": plan["hidden"].lr,
            "output_mult": plan["output"].multiplier,
        },
        "default_loss": default,
        "overhead": {"wrapped_ms": 1e3 * t_wrapped, "bare_ms": 1e3 * t_bare, "storage": "sqlite"},
        "lr_sweep": lr_sweep,
        "total_wall_seconds": time.perf_counter() - t0,
    }
    if args.quick:
        render(result_document("optuna_transfer", results), args.figures or Path(tempfile.mkdtemp()))
    else:
        print(f"results: {save_results('optuna_transfer', results)}")
    print(headline_line(results))
    return 0


# -- docs from the results file (pure) -----------------------------------------------------------
TARGET_REGRET, TARGET_OVERHEAD = 0.01, 0.01


def derived(r: dict[str, Any]) -> dict[str, float]:
    """Regret, cost ratio (CPU time of this single-threaded process) and wrapper overhead."""
    proxy_trial = statistics.median(
        t["seconds"] for t in r["proxy"]["trials"] if t["seconds"] is not None and t["state"] == "COMPLETE"
    )
    return {
        "regret": r["transferred"]["loss"] / r["direct"]["best_value"] - 1,
        "cost_ratio": r["direct"]["cpu_seconds"]
        / (r["proxy"]["cpu_seconds"] + r["transferred"]["cpu_seconds"]),
        "wall_ratio": r["direct"]["wall_seconds"]
        / (r["proxy"]["wall_seconds"] + r["transferred"]["wall_seconds"]),
        "proxy_trial_s": proxy_trial,
        "overhead": (r["overhead"]["wrapped_ms"] - r["overhead"]["bare_ms"]) / 1e3 / proxy_trial,
        "lr_gap_log2": abs(math.log2(r["proxy"]["best_base_lr"] / r["direct"]["best_base_lr"])),
    }


def headline_line(r: dict[str, Any]) -> str:
    d = derived(r)
    return (
        f"transfer {r['proxy_width']}->{r['target_width']}: regret {100 * d['regret']:+.2f}% (target <= 1%), "
        f"tuning {d['cost_ratio']:.1f}x cheaper, "
        f"wrapper overhead {100 * d['overhead']:.2f}% a trial (target < 1%)"
    )


def _finite(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None and math.isfinite(t["value"])
    ]


def figures_from(r: dict[str, Any], figures: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    sides = (("proxy", "tab:blue"), ("direct", "tab:orange"))
    # 1. loss against base lr, both studies, with the transferred point
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, color in sides:
        ts = _finite(r[key]["trials"])
        ax.scatter(
            [t["params"]["lr"] for t in ts],
            [t["value"] for t in ts],
            color=color,
            s=22,
            alpha=0.8,
            label=f"trials at width {r[key]['width']}",
        )
    ax.scatter(
        [r["proxy"]["best_base_lr"]],
        [r["transferred"]["loss"]],
        marker="*",
        s=220,
        color="crimson",
        zorder=5,
        label=f"proxy best, transferred to width {r['target_width']}",
    )
    ax.axhline(r["direct"]["best_value"], color="tab:orange", ls=":", lw=1, label="direct study's best")
    ax.set_xscale("log")
    ax.set_xlabel(f"base lr (hidden matrices at base width {r['config']['base_width']})")
    ax.set_ylabel(f"validation loss after {r['steps']} steps")
    ax.set_title(
        f"tune at width {r['proxy_width']}, transfer to {r['target_width']} vs tune at "
        f"{r['target_width']} ({r['trials']} trials each)",
        fontsize=10,
    )
    finite = [t["value"] for k, _ in sides for t in _finite(r[k]["trials"])]
    if finite:
        hi = sorted(finite)[int(0.85 * (len(finite) - 1))]
        ax.set_ylim(min([*finite, r["transferred"]["loss"]]) - 0.05, hi + 0.1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out["transfer"] = save_figure(fig, figures, "optuna_transfer", svg=True)
    plt.close(fig)
    # 2. optimisation history: value and best so far against trial number
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for key, color in sides:
        ts = sorted(_finite(r[key]["trials"]), key=lambda t: t["number"])
        best, running = math.inf, []
        for t in ts:
            best = min(best, t["value"])
            running.append(best)
        ax.scatter([t["number"] for t in ts], [t["value"] for t in ts], color=color, s=14, alpha=0.5)
        ax.plot(
            [t["number"] for t in ts],
            running,
            color=color,
            lw=1.6,
            label=f"best so far, width {r[key]['width']}",
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss")
    if finite:
        ax.set_ylim(min(finite) - 0.05, sorted(finite)[int(0.85 * (len(finite) - 1))] + 0.1)
    ax.set_title("optimisation history (TPE)", fontsize=10)
    ax.legend(fontsize=8)
    out["history"] = save_figure(fig, figures, "optuna_history", svg=True)
    plt.close(fig)
    # 3. slices: loss against each tuned base parameter at the proxy width
    params = list(r["space"])
    fig, axes = plt.subplots(1, len(params), figsize=(5.0 * len(params), 3.8), squeeze=False)
    ts = _finite(r["proxy"]["trials"])
    for ax, name in zip(axes[0], params):
        ax.scatter(
            [t["params"][name] for t in ts],
            [t["value"] for t in ts],
            c=[t["number"] for t in ts],
            cmap="viridis",
            s=22,
        )
        ax.set_xscale("log")
        ax.set_xlabel(f"base {name}")
        ax.set_ylabel(f"validation loss at width {r['proxy_width']}")
        ax.grid(alpha=0.3)
    fig.suptitle(
        "proxy study: loss against each tuned base hyperparameter (colour: trial number)", fontsize=10
    )
    fig.tight_layout()
    out["slice"] = save_figure(fig, figures, "optuna_slice", svg=True)
    plt.close(fig)
    return out


def render(data: dict[str, Any], figures: Path) -> str:
    r, env = data["results"], data["environment"]
    d = derived(r)
    figs = figures_from(r, figures)
    ok = lambda flag: "met" if flag else "**missed**"  # noqa: E731
    pw, tw = r["proxy_width"], r["target_width"]
    px, dx, tx, task, ov = r["proxy"], r["direct"], r["transferred"], r["task"], r["overhead"]
    table = "\n".join(
        [
            f"| proxy best (w{pw}) | transferred (w{tw}) | direct best (w{tw}) | untuned defaults (w{tw}) "
            f"| regret | best base lr proxy / direct (log2 gap) | CPU s direct / (proxy + one w{tw} run) "
            "| cost ratio |",
            "|---|---|---|---|---|---|---|---|",
            f"| {px['best_value']:.4f} | {tx['loss']:.4f} | {dx['best_value']:.4f} | {r['default_loss']:.4f} "
            f"| **{100 * d['regret']:+.2f} %** | {px['best_base_lr']:.3g} / {dx['best_base_lr']:.3g} "
            f"({d['lr_gap_log2']:.2f}) | {dx['cpu_seconds']:.1f} / ({px['cpu_seconds']:.1f} + "
            f"{tx['cpu_seconds']:.1f}) | **{d['cost_ratio']:.1f}×** |",
        ]
    )
    targets = "\n".join(
        [
            "| target | measured | |",
            "|---|---|---|",
            "| regret of the transferred setting vs the direct study's best (≤ 1 %) "
            f"| {100 * d['regret']:+.2f} % | {ok(d['regret'] <= TARGET_REGRET)} |",
            "| tuning cost, direct / (proxy + one target run), CPU time (≥ 8×) "
            f"| {d['cost_ratio']:.1f}× | {ok(d['cost_ratio'] >= 8)} |",
            "| `TransferObjective` overhead per proxy trial (< 1 %) "
            f"| {100 * d['overhead']:.2f} % | {ok(d['overhead'] < TARGET_OVERHEAD)} |",
        ]
    )
    sweep = ""
    if r["lr_sweep"]:
        s = r["lr_sweep"]
        rows = [
            "| base lr | " + " | ".join(f"2^{e}" for e in s["log2_lr"]) + " | best |",
            "|" + "---|" * (len(s["log2_lr"]) + 2),
        ]
        for w, losses in s["loss"].items():
            i = min(range(len(losses)), key=losses.__getitem__)
            rows.append(
                f"| width {w} | " + " | ".join(f"{v:.4f}" for v in losses) + f" | 2^{s['log2_lr'][i]} |"
            )
        sweep = f"""
### Is the optimum moving, or did the search miss it?

The same {r["steps"]}-step runs over a grid of base lr at output multiplier {s["output_mult"]:g}, at both
widths (training seed {r["seed"]}):

{chr(10).join(rows)}

If the best grid point is the same at both widths, the rule transfers at this grid's resolution,
and a regret above comes from the proxy search stopping short of its own optimum, not from the rule.
"""
    return f"""# Optuna proxy studies: tune narrow, run wide

Generated from `benchmarks/results/optuna_transfer.json`, written by `{command_line(data)}`
({"smoke run: not evidence" if r["quick"] else "full run"}).

{targets}

## Tune at a proxy width and transfer, vs tune at the target width

Task: the built-in char-level LM (`TinyLlama`, {task["depth"]} blocks, head_dim {task["head_dim"]},
sequence {task["seq_len"]}, batch {task["batch_size"]}, next-byte prediction, {task["val_sequences"]}
fixed validation windows), {r["steps"]} AdamW steps a run, rule `{r["config"]["rule"]}`, base width
{r["config"]["base_width"]}, weight decay {r["config"]["weight_decay"]:g}. Two Optuna studies (TPE,
independent sampler seeds), **{r["trials"]} trials each**, over the same base hyperparameters
(base lr and output multiplier, log scales):

* proxy: trials at width {pw}; `best_plan(study, {tw})` carries the best trial to width {tw},
  trained once there;
* direct: trials at width {tw}.

Widths {pw} → {tw} ({tw // pw}×) rather than 128 → 1024: on 2 shared CPU cores the direct study at
width 1024 would take hours.

{table}

![proxy vs direct study]({figs["transfer"]})

![optimisation history]({figs["history"]})

![proxy study slices]({figs["slice"]})

* The cost ratio uses CPU time of this single-threaded process (wall time on a shared machine
  follows the other jobs' load; wall ratio {d["wall_ratio"]:.1f}×). The proxy side pays one
  full training run at the target width; a narrow step also carries fixed costs (embedding,
  readout over a 128-byte vocabulary), so the ratio stays below the width ratio.
* Wrapper overhead: {ov["wrapped_ms"] - ov["bare_ms"]:.2f} ms a trial
  (wrapped {ov["wrapped_ms"]:.2f} ms, bare {ov["bare_ms"]:.2f} ms, {ov["storage"]})
  against a median proxy trial of {d["proxy_trial_s"]:.2f} s; measured against a bare Optuna objective
  doing the same `suggest_float` calls on the same storage.
* One training seed and one pair of sampler seeds, not repeated: the regret of a short TPE search
  varies from seed to seed (the proxy search may stop short of its own optimum). {r["trials"]}
  trials is the STN benchmark's budget.
{sweep}
## Many workers on PostgreSQL and crashed workers

`tests/test_postgres_workers.py` (run by `.ci/run` against a throwaway PostgreSQL on loopback,
`source .ci/pg.sh; pg_up`): 4 worker processes, each building its own storage from the URL, × 25
trials on one study give exactly 100 COMPLETE trials, numbered 0..99, 25 per worker; the same on
Optuna's journal file storage. A worker SIGKILLed inside a trial: after the grace period Optuna's
heartbeat marks its trial FAIL and `RetryHeartbeatStaleTrialCallback` enqueues a copy with the same
parameters, which the next worker completes. This is tested on PostgreSQL and SQLite. **The journal
storage has no heartbeat**: a trial of a crashed worker there stays RUNNING and is not retried.
With `OPTUNA_PG_URL` unset the PostgreSQL cases skip; set but unreachable, they fail.

## Environment

{environment_table(env)}
"""


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    d = derived(r)
    return [
        (
            f"tune at width {r['proxy_width']} and transfer to {r['target_width']} vs tune at "
            f"{r['target_width']}, {r['trials']} trials each (≤ 1% regret, ≥ 8× cheaper)",
            f"regret **{100 * d['regret']:+.2f}%**, **{d['cost_ratio']:.1f}×** cheaper (CPU time)",
            "`python3 benchmarks/optuna_transfer.py`",
        ),
        (
            "`TransferObjective` overhead per proxy trial (< 1%)",
            f"{100 * d['overhead']:.2f}%",
            "`python3 benchmarks/optuna_transfer.py`",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
