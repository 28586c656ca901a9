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

Run:  python benchmarks/optuna_transfer.py            (about 5-6 min on 2 shared CPU cores)
      python benchmarks/optuna_transfer.py --quick    (smoke run, a few seconds)
The last line is the headline figure.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch

from hptransfer.scaling import suggest
from hptransfer.tuning import (
    Range,
    SearchSpace,
    TransferObjective,
    best_config,
    best_plan,
    open_study,
    ranked_trials,
)
from hptransfer.tuning.builtin import builtin_trainer, resolve_model

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


def plot(proxy, direct, transferred_loss, best_cfg, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sides = ((proxy, args.proxy_width, "tab:blue"), (direct, args.target_width, "tab:orange"))
    for study, width, color in sides:
        ts = ranked_trials(study)
        ax.scatter(
            [t.params["lr"] for t in ts],
            [t.value for t in ts],
            color=color,
            s=22,
            alpha=0.8,
            label=f"trials at width {width}",
        )
    ax.scatter(
        [best_cfg.lr],
        [transferred_loss],
        marker="*",
        s=220,
        color="crimson",
        zorder=5,
        label=f"proxy best, transferred to width {args.target_width}",
    )
    ax.axhline(direct.best_value, color="tab:orange", ls=":", lw=1, label="direct study's best")
    ax.set_xscale("log")
    ax.set_xlabel("base lr (hidden matrices at base width 64; muP: lr_hidden = base lr · 64/width)")
    ax.set_ylabel(f"validation loss after {args.steps} steps")
    ax.set_title(
        f"tune at width {args.proxy_width}, transfer to {args.target_width} vs tune at "
        f"{args.target_width} ({args.trials} trials each)",
        fontsize=10,
    )
    finite = [t.value for s in (proxy, direct) for t in ranked_trials(s)]
    hi = sorted(finite)[int(0.85 * (len(finite) - 1))]
    ax.set_ylim(min([*finite, transferred_loss]) - 0.05, hi + 0.1)
    ax.legend(fontsize=8)
    for ext in ("png", "svg"):
        fig.savefig(path.with_suffix(f".{ext}"), dpi=130, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny widths, few trials/steps")
    ap.add_argument("--proxy-width", type=int, default=32)
    ap.add_argument("--target-width", type=int, default=256)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--lr-sweep",
        action="store_true",
        help="instead of the studies: loss against base lr (2^-11..2^-6, output mult 6) at "
        "both widths, to tell optimum drift from search luck",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="write optuna_transfer/optuna_history/optuna_slice figures here",
    )
    args = ap.parse_args()
    if args.quick:
        args.proxy_width, args.target_width, args.trials, args.steps = 16, 64, 4, 15
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    choice = resolve_model("llama")
    cfg = choice.config  # base width 64, rule mup-wd-linear
    seq_len = 32
    train = builtin_trainer(
        choice,
        batch_size=32,
        seed=args.seed,
        data_kwargs={"seq_len": seq_len, "val_sequences": 256},
        model_kwargs={"seq_len": seq_len},
    )
    print(
        f"task charlm (TinyLlama, depth 2, head_dim 16, seq {seq_len}, batch 32), {args.steps} steps "
        f"a run, {args.trials} TPE trials a study over base lr and output multiplier; rule {cfg.rule}, "
        f"base width {cfg.base_width}; torch threads 1"
    )
    if args.lr_sweep:
        exps = [-11, -10, -9, -8, -7, -6]
        for width in (args.proxy_width, args.target_width):
            losses = []
            for e in exps:
                c = replace(cfg, lr=2.0**e, output_mult=6.0)
                plan = suggest(c, width)
                losses.append(train(plan, optuna.trial.FixedTrial({}), steps=args.steps, config=c))
            best = exps[min(range(len(exps)), key=losses.__getitem__)]
            print(
                f"width {width}: "
                + ", ".join(f"2^{e}: {v:.4f}" for e, v in zip(exps, losses))
                + f" -> best base lr 2^{best}"
            )
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        proxy, t_proxy, c_proxy = run_study(
            "proxy", url, train, cfg, args.proxy_width, args.trials, args.steps, args.seed
        )
        print(
            f"proxy study at width {args.proxy_width}: best {proxy.best_value:.4f}, {t_proxy:.1f} s "
            f"({c_proxy:.1f} s CPU)"
        )
        plan = best_plan(proxy, args.target_width)
        start, cpu = time.perf_counter(), time.process_time()
        transferred = train(plan, optuna.trial.FixedTrial({}), steps=args.steps, config=best_config(proxy))
        t_final, c_final = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"transferred to width {args.target_width}: loss {transferred:.4f} ({t_final:.1f} s; hidden lr "
            f"{plan['hidden'].lr:.3g}, output mult {plan['output'].multiplier:.3g})"
        )
        # another sampler seed: an independent search (with the same seed TPE would replay the
        # proxy's sequence whenever the trials rank alike, and the comparison would be circular)
        direct, t_direct, c_direct = run_study(
            "direct", url, train, cfg, args.target_width, args.trials, args.steps, args.seed + 1
        )
        print(
            f"direct study at width {args.target_width}: best {direct.best_value:.4f}, {t_direct:.1f} s "
            f"({c_direct:.1f} s CPU)"
        )
        default = train(
            suggest(cfg, args.target_width), optuna.trial.FixedTrial({}), steps=args.steps, config=cfg
        )
        print(f"untuned built-in defaults at width {args.target_width}: loss {default:.4f}")
        t_wrapped, t_bare = overhead(url, cfg, args.proxy_width)
        if args.figures is not None:
            from hptransfer.tuning.plots import plot_study

            args.figures.mkdir(parents=True, exist_ok=True)
            plot(proxy, direct, transferred, best_config(proxy), args, args.figures / "optuna_transfer")
            plot_study(proxy, args.figures, args.target_width, prefix="optuna")
            print(f"figures in {args.figures}")

    regret = (transferred - direct.best_value) / direct.best_value
    # CPU time of this single-threaded process: the machine is shared, wall time swings with load
    cost_ratio = c_direct / (c_proxy + c_final)
    proxy_trial = statistics.median(t.duration.total_seconds() for t in proxy.trials)
    over = (t_wrapped - t_bare) / proxy_trial
    base_lrs = (best_config(proxy).lr, best_config(direct).lr)
    print(
        f"best base lr: proxy {base_lrs[0]:.3g}, direct {base_lrs[1]:.3g} "
        f"(log2 gap {abs(math.log2(base_lrs[0] / base_lrs[1])):.2f})"
    )
    print(
        f"wrapper overhead: {1e3 * (t_wrapped - t_bare):.2f} ms a trial (wrapped {1e3 * t_wrapped:.2f} ms, "
        f"bare {1e3 * t_bare:.2f} ms, sqlite) = {100 * over:.2f}% of a {proxy_trial:.2f} s proxy trial"
    )
    print(
        f"cost (CPU time): direct {c_direct:.1f} s vs proxy {c_proxy:.1f} s + one target run "
        f"{c_final:.1f} s "
        f"(wall: {t_direct:.1f} s vs {t_proxy:.1f} s + {t_final:.1f} s)"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "proxy_width": args.proxy_width,
                    "target_width": args.target_width,
                    "trials": args.trials,
                    "steps": args.steps,
                    "proxy_best": proxy.best_value,
                    "proxy_best_params": proxy.best_params,
                    "transferred_loss": transferred,
                    "direct_best": direct.best_value,
                    "direct_best_params": direct.best_params,
                    "default_loss": default,
                    "regret": regret,
                    "seconds_proxy": t_proxy,
                    "seconds_final": t_final,
                    "seconds_direct": t_direct,
                    "cpu_proxy": c_proxy,
                    "cpu_final": c_final,
                    "cpu_direct": c_direct,
                    "cost_ratio": cost_ratio,
                    "wrapper_ms": 1e3 * t_wrapped,
                    "bare_ms": 1e3 * t_bare,
                    "proxy_trial_s": proxy_trial,
                    "overhead": over,
                },
                indent=2,
            )
            + "\n"
        )
    print(
        f"transfer {args.proxy_width}->{args.target_width}: regret {100 * regret:+.2f}% (target <= 1%), "
        f"tuning {cost_ratio:.1f}x cheaper, wrapper overhead {100 * over:.2f}% a trial (target < 1%)"
    )


if __name__ == "__main__":
    main()
