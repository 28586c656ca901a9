"""STN and Delta-STN vs Optuna TPE and random search on a task that overfits without regularisation.

All methods tune the same hyperparameters in the same ranges (the task's defaults: dropout,
weight decay, input noise, label smoothing for ``classify``) with the same training budget
(``--epochs`` passes over a 256-example training split). Reported per method, mean ± sd over seeds
(each seed: new data, new model init, new sampler seed):

* validation loss of the final model (TPE / random: of the best of ``--trials`` trials, selected on
  that validation loss; STN: of the model at the end of its one run) and its **test** loss on
  4096 held-out examples (no method saw them: the fair comparison, since choosing the best of 30
  trials on the validation set is optimistic);
* cost in units of one plain training run (mean time of the searches' trials), in wall-clock time
  and in process CPU time (the latter is robust to other jobs on a shared machine);
* STN per-step overhead vs the plain model (forward + backward + Adam step, same batch).

Usage: python benchmarks/stn_vs_optuna.py [--quick] [--seeds 3] [--trials 30] [--epochs 60]
The last line printed is the headline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from hptransfer.stn import StnConfig, StnTuner, TensorBatches, make_task, train_fixed
from hptransfer.stn.layers import l2_term
from hptransfer.stn.report import plot_trajectory
from hptransfer.stn.tasks import Task
from hptransfer.stn.tuner import adam_kwargs


def _stn(task: Task, epochs: int, seed: int, delta: bool, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = task.make_model()
    warmup = int(args.warmup_frac * epochs * -(-task.train[0].shape[0] // task.batch_size))
    cfg = StnConfig(
        lr=task.lr,
        hyper_lr=args.hyper_lr,
        tau=1e-3,
        t_train=args.t_train,
        t_val=1,
        warmup_steps=warmup,
        delta=delta,
        seed=seed,
        checkpoint_every=0,
    )
    tuner = StnTuner(model, task.default_hypers, loss=task.loss, config=cfg)
    start, cpu0 = time.perf_counter(), time.process_time()
    res = tuner.fit(
        TensorBatches(*task.train, task.batch_size),
        TensorBatches(*task.val, 128),
        epochs=epochs,
        eval_data=[task.val],
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    test = tuner.evaluate([task.test])
    retrain = train_fixed(task, res.values, epochs=epochs, seed=seed)
    return {
        "val": res.final_val_loss,
        "test": test,
        "wall": wall,
        "cpu": cpu,
        "values": res.values,
        "retrain_val": retrain["val_loss"],
        "retrain_test": retrain["test_loss"],
        "trajectory": res.trajectory,
    }


def _search(task: Task, epochs: int, seed: int, trials: int, sampler: str) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = task.default_hypers
    samp = (
        optuna.samplers.TPESampler(seed=seed)
        if sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    study = optuna.create_study(direction="minimize", sampler=samp)
    trial_walls: list[float] = []
    trial_cpus: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        values = {s.name: trial.suggest_float(s.name, s.low, s.high, log=s.transform == "log") for s in specs}
        t0, c0 = time.perf_counter(), time.process_time()
        out = train_fixed(task, values, epochs=epochs, seed=seed * 1000 + trial.number)
        trial_walls.append(time.perf_counter() - t0)
        trial_cpus.append(time.process_time() - c0)
        trial.set_user_attr("test", out["test_loss"])
        return out["val_loss"]

    start, cpu0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=trials)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    best = study.best_trial
    return {
        "val": best.value,
        "test": best.user_attrs["test"],
        "wall": wall,
        "cpu": cpu,
        "unit": statistics.mean(trial_walls),
        "unit_cpu": statistics.mean(trial_cpus),
        "values": best.params,
    }


def _overhead(task: Task, reps: int, batch: int) -> dict[str, float]:
    """Per-step CPU time (min over reps) of the STN train/val step and the plain step, same batch."""
    specs = task.default_hypers
    x, y = task.train
    batches = list(TensorBatches(x, y, batch))
    torch.manual_seed(0)
    tuner = StnTuner(task.make_model(), specs, loss=task.loss, config=StnConfig(checkpoint_every=0))
    dtuner = StnTuner(
        task.make_model(), specs, loss=task.loss, config=StnConfig(checkpoint_every=0, delta=True)
    )
    plain = task.make_model()
    init = {s.name: s.init for s in specs}
    for mod in plain.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = init.get("dropout", 0.0)
    opt = torch.optim.Adam(plain.parameters(), lr=task.lr, **adam_kwargs(torch.device("cpu")))
    weights = [m.weight for m in plain.modules() if isinstance(m, torch.nn.Linear)]

    def plain_step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        plain.train()
        xb = xb + init.get("input_noise", 0.0) * torch.randn_like(xb)
        out = plain(xb)
        loss = (
            torch.nn.functional.cross_entropy(out, yb, label_smoothing=init.get("label_smoothing", 0.0))
            if task.loss == "cross_entropy"
            else torch.nn.functional.mse_loss(out, yb)
        )
        loss = loss + sum(l2_term(w, init.get("weight_decay", 0.0)) for w in weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fns = {
        "plain": plain_step,
        "stn_train": tuner._train_step,
        "stn_val": tuner._val_step,
        "delta_train": dtuner._train_step,
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            # CPU time of this (single-threaded) process: robust to other jobs on a shared machine
            t0 = time.process_time()
            for xb, yb in batches:
                fn(xb, yb)
            times[key].append((time.process_time() - t0) / len(batches))
    return {k: min(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 3 trials, 3 epochs")
    ap.add_argument("--task", default="classify")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=100,
        help="seeds first-seed.. (the STN settings were chosen on seeds 0-2)",
    )
    ap.add_argument("--hyper-lr", type=float, default=0.1)
    ap.add_argument("--warmup-frac", type=float, default=0.25, help="STN warm-up, share of training")
    ap.add_argument("--t-train", type=int, default=5)
    ap.add_argument("--figures", type=Path, default=None, help="write stn_trajectory.{png,svg} here")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.epochs = 1, 3, 3
    torch.set_num_threads(1)
    rows: dict[str, list[dict[str, Any]]] = {"STN": [], "Delta-STN": [], "TPE": [], "random": []}
    train_fixed(make_task(args.task, seed=0), {}, epochs=1)  # one-time torch/optimizer warm-up
    t_start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        task = make_task(args.task, seed=seed)
        rows["TPE"].append(_search(task, args.epochs, seed, args.trials, "tpe"))
        rows["random"].append(_search(task, args.epochs, seed, args.trials, "random"))
        unit = statistics.mean([rows["TPE"][-1]["unit"], rows["random"][-1]["unit"]])
        unit_cpu = statistics.mean([rows["TPE"][-1]["unit_cpu"], rows["random"][-1]["unit_cpu"]])
        for r in (rows["TPE"][-1], rows["random"][-1]):
            r["cost"], r["cost_cpu"] = r["wall"] / unit, r["cpu"] / unit_cpu
        for name, delta in (("STN", False), ("Delta-STN", True)):
            r = _stn(task, args.epochs, seed, delta, args)
            r["cost"], r["cost_cpu"] = r["wall"] / unit, r["cpu"] / unit_cpu
            rows[name].append(r)
        print(
            f"seed {seed}: one plain run {unit:.2f} s; "
            + "; ".join(
                f"{k} val {v[-1]['val']:.4f} test {v[-1]['test']:.4f} cost {v[-1]['cost']:.2f}x"
                for k, v in rows.items()
            ),
            flush=True,
        )
        if seed == args.first_seed and args.figures is not None:
            for name in ("STN", "Delta-STN"):
                stem = args.figures / f"stn_trajectory{'_delta' if name == 'Delta-STN' else ''}"
                log_names = [s.name for s in task.default_hypers if s.transform == "log"]
                plot_trajectory(
                    rows[name][0]["trajectory"],
                    stem,
                    log_names,
                    title=f"{name} on {args.task}, seed {seed} ({args.epochs} epochs)",
                )

    def ms(key: str, xs: list[dict[str, Any]]) -> str:
        vals = [x[key] for x in xs]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.4f} ± {sd:.4f}"

    print(f"\n{args.task}: {args.seeds} seeds, {args.epochs} epochs, {args.trials} trials per search")
    print(
        f"{'method':<12} {'val loss':>18} {'test loss':>18} {'cost: wall':>11} {'cost: CPU':>10}"
        "   (in plain training runs)"
    )
    for name, rs in rows.items():
        cost = statistics.mean(r["cost"] for r in rs)
        cost_cpu = statistics.mean(r["cost_cpu"] for r in rs)
        print(f"{name:<12} {ms('val', rs):>18} {ms('test', rs):>18} {cost:>10.2f}x {cost_cpu:>9.2f}x")
    for name in ("STN", "Delta-STN"):
        print(
            f"{name + ' retrained at its final values':<40} val {ms('retrain_val', rows[name])} "
            f"test {ms('retrain_test', rows[name])} (+1 plain run)"
        )
    task = make_task(args.task, seed=0)
    over = _overhead(task, reps=2 if args.quick else 7, batch=task.batch_size)
    over_big = _overhead(task, reps=2 if args.quick else 5, batch=128)
    print(
        f"per-step time, batch {task.batch_size}: plain {over['plain'] * 1e3:.2f} ms, STN train step "
        f"{over['stn_train'] / over['plain']:.2f}x, Delta-STN train step "
        f"{over['delta_train'] / over['plain']:.2f}x, "
        f"STN val step {over['stn_val'] / over['plain']:.2f}x"
    )
    print(
        f"per-step time, batch 128: plain {over_big['plain'] * 1e3:.2f} ms, STN train step "
        f"{over_big['stn_train'] / over_big['plain']:.2f}x, STN val step "
        f"{over_big['stn_val'] / over_big['plain']:.2f}x"
    )
    print(f"total benchmark wall time {time.perf_counter() - t_start:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        dump = {
            k: [{kk: vv for kk, vv in r.items() if kk != "trajectory"} for r in v] for k, v in rows.items()
        }
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": dump,
                    "overhead": over,
                    "overhead_b128": over_big,
                },
                indent=1,
            )
        )
    mean = {k: statistics.mean(r["val"] for r in v) for k, v in rows.items()}
    test = {k: statistics.mean(r["test"] for r in v) for k, v in rows.items()}
    cost = {k: statistics.mean(r["cost"] for r in v) for k, v in rows.items()}
    cost_cpu = {k: statistics.mean(r["cost_cpu"] for r in v) for k, v in rows.items()}
    best = min(("STN", "Delta-STN"), key=lambda k: mean[k])
    print(
        f"HEADLINE: {best} val loss {mean[best]:.4f} (test {test[best]:.4f}) at {cost[best]:.2f}x one "
        f"plain run (CPU time {cost_cpu[best]:.2f}x) vs Optuna TPE-{args.trials} val {mean['TPE']:.4f} "
        f"(test {test['TPE']:.4f}) at {cost['TPE']:.1f}x; STN train-step overhead "
        f"{over['stn_train'] / over['plain']:.2f}x"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
