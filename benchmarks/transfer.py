"""Transfer benchmark: does the optimum base lr (and weight decay) stay put as width grows?

On the built-in byte-level LM task (a 2-block LLaMA-style decoder on Python stdlib sources):

* lr sweeps across widths for ``sp``, the ``mup`` package (MuReadout + MuAdamW +
  set_base_shapes, mup 1.0) and our ``mup`` rule; the optimum base lr per width is a parabola
  fit in log2 lr around the grid minimum, and the drift is |Δlog2 lr*| from the smallest to the
  largest width. The lr sweeps use weight decay 0, where our ``mup``, ``mup-wd-sqrt`` and
  ``mup-wd-linear`` are the same rule (they differ only in how wd scales), so one sweep stands
  for all three.
* wd sweeps across widths for our three wd width exponents (``mup-wd-constant``: e = 0,
  ``mup-wd-sqrt``: e = 0.5, ``mup-wd-linear``: e = 1) in a regime where wd matters (a small
  training set seen for many epochs, several AdamW timescales long), at the lr found above.
* transfer regret: loss at the largest width with the smallest width's optimum vs the best of
  the direct sweep at the largest width.

At least 2 seeds at the smallest and largest widths. Every run is an Optuna trial in a SQLite
study under ``--cache`` (default ``benchmarks/.transfer-cache``), so a killed benchmark resumes.

Run:  python benchmarks/transfer.py            (full: about 20-30 min on 2 CPU cores)
      python benchmarks/transfer.py --quick    (smoke run, seconds)

The last printed line is the headline: lr drift under our muP vs SP, and the wd drift of the
best wd rule.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from hptransfer.models import TinyLlama
from hptransfer.scaling import ProxyConfig
from hptransfer.scaling.torch_adapter import meta_model
from hptransfer.sweep import SweepResult, SweepSpec, log2_grid, plot_sweep, run_sweep, summarise
from hptransfer.training import get_data, train, train_proxy

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    widths: tuple[int, ...]
    head_dim: int
    depth: int
    seq_len: int
    batch_size: int
    lr_grid: tuple[float, ...]
    lr_steps: int
    wd_grid: tuple[float, ...]
    wd_steps: int
    wd_train_tokens: int
    init_std: float
    wd_lr: float = 2.0**-6
    val_sequences: int = 256
    extra_seed: bool = True


FULL = Setting(
    widths=(16, 32, 64, 128),
    head_dim=8,
    depth=2,
    seq_len=32,
    batch_size=16,
    lr_grid=log2_grid(-11, -4),
    lr_steps=250,
    wd_grid=log2_grid(-2, 5),
    wd_steps=400,
    wd_train_tokens=32768,
    init_std=0.1,
)
QUICK = Setting(
    widths=(16, 32),
    head_dim=8,
    depth=1,
    seq_len=16,
    batch_size=4,
    lr_grid=log2_grid(-8, -4, 2),
    lr_steps=3,
    wd_grid=log2_grid(-2, 2, 2),
    wd_steps=3,
    wd_train_tokens=2048,
    init_std=0.1,
    val_sequences=8,
    extra_seed=True,
)

FIT_WINDOW = 2
LR_RULES = ("sp", "mup-package", "mup")
WD_RULES = ("mup-wd-constant", "mup-wd-sqrt", "mup-wd-linear")


def base_config(s: Setting, rule: str, lr: float = 2.0**-6, wd: float = 0.0) -> ProxyConfig:
    return ProxyConfig(
        name="bench-llama",
        base_width=s.widths[0],
        head_dim=s.head_dim,
        lr=lr,
        weight_decay=wd,
        init_std=s.init_std,
        output_init_std=0.0,
        rule=rule,
    )


def model_kwargs(s: Setting) -> dict[str, Any]:
    return {"depth": s.depth, "head_dim": s.head_dim, "seq_len": s.seq_len}


def spec_for(s: Setting, rule: str, param: str, cfg: ProxyConfig, data_kwargs: dict[str, Any]) -> SweepSpec:
    extra = {s.widths[0]: (1,), s.widths[-1]: (1,)} if s.extra_seed else {}
    steps = s.lr_steps if param == "lr" else s.wd_steps
    return SweepSpec(
        task="charlm",
        rule=rule,
        widths=s.widths,
        param=param,  # type: ignore[arg-type]
        grid=s.lr_grid if param == "lr" else s.wd_grid,
        seeds=(0,),
        extra_seeds=extra,
        steps=steps,
        batch_size=s.batch_size,
        config=cfg,
        data_kwargs=data_kwargs,
        model_kwargs=model_kwargs(s),
        schedule="cosine",
        warmup=max(1, steps // 10),
    )


# -- the mup package baseline ------------------------------------------------------------------
def mup_package_trainer(s: Setting, spec: SweepSpec, wd: float = 0.0):
    """train_fn(width, lr, seed) with mup 1.0: MuReadout (zero init), set_base_shapes against
    the base width, mup.init for hidden matrices, MuAdamW."""
    import mup
    from torch import nn

    mkw = model_kwargs(s)

    def make(width: int) -> nn.Module:
        m = TinyLlama(width, vocab_size=128, **mkw)
        m.lm_head = mup.MuReadout(width, 128, bias=False, readout_zero_init=True)
        return m

    base, delta = meta_model(make, s.widths[0]), meta_model(make, 2 * s.widths[0])
    data = get_data("charlm", seq_len=s.seq_len, **dict(spec.data_kwargs))

    def run(width: int, lr: float, seed: int) -> Any:
        torch.manual_seed(seed)
        model = make(width)
        mup.set_base_shapes(model, base, delta=delta)
        for name, p in model.named_parameters():
            if p.ndim < 2 or name.startswith("lm_head"):
                continue
            if name.startswith("embed"):
                nn.init.normal_(p, std=s.init_std)  # vector-like: width-independent
            else:
                mup.init.normal_(p, std=s.init_std)  # hidden: std / sqrt(fan-in multiplier)
        opt = mup.MuAdamW(model.parameters(), lr=lr, weight_decay=wd)
        return train(
            model,
            None,
            None,
            data,
            steps=spec.steps,
            batch_size=spec.batch_size,
            seed=seed,
            schedule=spec.schedule,
            warmup=spec.warmup,
            optimizer=opt,
            width=width,
        )

    return run


# -- running -----------------------------------------------------------------------------------
def sweep(
    s: Setting,
    rule: str,
    param: str,
    cache: Path | None,
    cfg: ProxyConfig,
    data_kwargs: dict[str, Any],
    progress: bool,
) -> SweepResult:
    """One sweep; ``cache=None`` keeps the study in memory (quick mode)."""
    out = cache / f"{rule}-{param}" if cache is not None else None
    if rule == "mup-package":
        spec = spec_for(s, "mup", param, cfg, data_kwargs)
        res = run_sweep(
            spec,
            out,
            study_name=f"{rule}-{param}",
            train_fn=mup_package_trainer(s, spec, cfg.weight_decay),
            progress=progress,
            plot=False,
        )
    else:
        spec = spec_for(s, rule, param, cfg, data_kwargs)
        res = run_sweep(spec, out, study_name=f"{rule}-{param}", progress=progress, plot=False)
    # 5-point parabola (2 grid points either side of the minimum): steadier on noisy curves
    return summarise(res.spec, res.records, window=FIT_WINDOW)


def transfer_loss(
    s: Setting,
    rule: str,
    param: str,
    value: float,
    cfg: ProxyConfig,
    data_kwargs: dict[str, Any],
    cache: Path,
) -> float:
    """Mean validation loss at the largest width with base ``param`` = ``value`` (seeds 0, 1)."""
    store = cache / "transfer_runs.json"
    runs = json.loads(store.read_text()) if store.exists() else {}
    key = f"{rule}|{param}|{value:.6g}|{s.widths[-1]}|{s.lr_steps}|{s.wd_steps}"
    if key not in runs:
        spec = spec_for(s, "mup" if rule == "mup-package" else rule, param, cfg, data_kwargs)
        losses = []
        for seed in (0, 1) if s.extra_seed else (0,):
            if rule == "mup-package":
                res = mup_package_trainer(s, spec, cfg.weight_decay)(s.widths[-1], value, seed)
            else:
                field = "lr" if param == "lr" else "weight_decay"
                res = train_proxy(
                    "charlm",
                    s.widths[-1],
                    replace(cfg, **{field: value}),
                    rule=rule,
                    steps=spec.steps,
                    batch_size=spec.batch_size,
                    seed=seed,
                    data_kwargs=data_kwargs,
                    model_kwargs=model_kwargs(s),
                    schedule=spec.schedule,
                    warmup=spec.warmup,
                )
            losses.append(res.val_loss)
        runs[key] = sum(losses) / len(losses)
        store.write_text(json.dumps(runs, indent=1))
    return float(runs[key])


def best_direct(result: SweepResult, width: int) -> float:
    ys = [y for y in result.curves[width][1] if math.isfinite(y)]
    return min(ys) if ys else math.inf


def table(title: str, results: dict[str, SweepResult], widths: tuple[int, ...], param: str) -> str:
    head = "| rule | " + " | ".join(f"log2 {param}* @{w}" for w in widths) + " | drift |"
    lines = [f"### {title}", "", head, "|" + "---|" * (len(widths) + 2)]
    for rule, res in results.items():
        cells = []
        for w in widths:
            o = res.optima.get(w)
            cells.append("diverged" if o is None else f"{o.log2:.2f}" + ("(edge)" if o.at_edge else ""))
        d = res.drift
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {d:.2f} |" if d is not None else " | - |")
    return "\n".join(lines)


def figure(results: dict[str, SweepResult], path_stem: Path, suptitle: str, svg: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2), squeeze=False)
    for ax, (rule, res) in zip(axes[0], results.items()):
        d = res.drift
        plot_sweep(res, "", ax=ax, title=f"{rule}" + (f" · drift {d:.2f}" if d is not None else ""))
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    for ext in (".png", ".svg") if svg else (".png",):
        fig.savefig(str(path_stem) + ext, dpi=120 if svg else 60)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run in seconds")
    ap.add_argument("--cache", type=Path, default=None, help="sweep studies (resumable)")
    ap.add_argument("--figures", type=Path, default=None, help="where transfer_*.png/svg go")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--part",
        choices=("all", "lr", "wd"),
        default="all",
        help="run only the lr or the wd sweeps (two processes side by side); 'all' "
        "reuses what the studies in --cache already hold",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="hpt-transfer-")) if args.quick else None
    cache = args.cache or (tmp / "cache" if tmp else ROOT / "benchmarks" / ".transfer-cache")
    figs = args.figures or (tmp if tmp else ROOT / "docs" / "figures")
    cache.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    studies = None if args.quick else cache  # quick: in-memory studies, PNG only
    t0 = time.perf_counter()
    w0, w1 = s.widths[0], s.widths[-1]
    print(
        f"transfer benchmark ({'quick' if args.quick else 'full'}): charlm, widths {list(s.widths)} "
        f"({w1 // w0}x), depth {s.depth}, head_dim {s.head_dim}, seq {s.seq_len}, batch {s.batch_size}"
    )

    # 1. lr sweeps (wd = 0): full training split
    lr_data: dict[str, Any] = {"val_sequences": s.val_sequences}
    lr_star = s.wd_lr
    wd_data = {"train_tokens": s.wd_train_tokens, "val_sequences": s.val_sequences}
    if args.part == "wd":  # a second process can run the wd sweeps beside the lr sweeps
        for r in WD_RULES:
            sweep(s, r, "wd", studies, base_config(s, r, lr=lr_star), wd_data, progress)
        return 0
    lr_res = {
        r: sweep(s, r, "lr", studies, base_config(s, "mup" if r == "mup-package" else r), lr_data, progress)
        for r in LR_RULES
    }
    if args.part == "lr":
        return 0
    print(table(f"Optimum base lr (log2), {s.lr_steps} steps, wd 0", lr_res, s.widths, "lr"))
    figure(
        lr_res,
        figs / "transfer_lr",
        f"byte-level LM, validation loss vs log2 base lr ({s.lr_steps} steps, wd 0)",
        svg=not args.quick,
    )

    # 2. wd sweeps at a fixed base lr near the muP optimum, small training set, many epochs
    wd_res = {
        r: sweep(s, r, "wd", studies, base_config(s, r, lr=lr_star), wd_data, progress) for r in WD_RULES
    }
    epochs = s.wd_steps * s.batch_size * s.seq_len / s.wd_train_tokens
    print(
        table(
            f"Optimum base wd (log2), lr 2^{math.log2(lr_star):g}, {s.wd_steps} steps, "
            f"{s.wd_train_tokens} training tokens (~{epochs:.0f} epochs)",
            wd_res,
            s.widths,
            "wd",
        )
    )
    figure(
        wd_res,
        figs / "transfer_wd",
        f"overfitting regime ({s.wd_train_tokens} train tokens, "
        f"~{epochs:.0f} epochs): validation loss vs log2 base wd",
        svg=not args.quick,
    )

    # The three wd rules differ only by where base wd sits on each width's axis (effective wd of
    # matrices = base * m**e), so each gives an estimate of how the effective optimum scales:
    # log2 wd_eff*(m) = log2 wd*(m) + e*log2 m; its slope in log2 m is the exponent the data asks for.
    import numpy as np

    fits = {}
    for r in WD_RULES:
        e = {"mup-wd-constant": 0.0, "mup-wd-sqrt": 0.5, "mup-wd-linear": 1.0}[r]
        ws = [w for w in s.widths if w in wd_res[r].optima]
        if len(ws) >= 2:
            xs = [math.log2(w / w0) for w in ws]
            ys = [wd_res[r].optima[w].log2 + e * x for w, x in zip(ws, xs)]
            fits[r] = float(np.polyfit(xs, ys, 1)[0])
    if fits:
        print(
            "fitted wd width exponent e* (effective matrix wd* ∝ m^e*), from each rule's optima: "
            + ", ".join(f"{r.removeprefix('mup-wd-')} {v:.2f}" for r, v in fits.items())
            + f"; mean {sum(fits.values()) / len(fits):.2f} (sqrt = 0.5, linear = 1)"
        )

    # 3. transfer regret at the largest width
    print(f"### Transfer regret at width {w1} (hyperparameters from width {w0})")
    print("| rule | param | transferred loss | best direct loss | regret | vs best of all rules |")
    print("|---|---|---|---|---|---|")
    regrets: dict[str, float] = {}
    for param, results, data_kwargs, cfg_of in (
        ("lr", lr_res, lr_data, lambda r: base_config(s, "mup" if r == "mup-package" else r)),
        ("wd", wd_res, wd_data, lambda r: base_config(s, r, lr=lr_star)),
    ):
        best_all = min(best_direct(res, w1) for res in results.values())
        for rule, res in results.items():
            if w0 not in res.optima:
                continue
            lt = transfer_loss(s, rule, param, res.optima[w0].value, cfg_of(rule), data_kwargs, cache)
            bd = best_direct(res, w1)
            regrets[f"{rule}/{param}"] = lt / bd - 1
            print(
                f"| {rule} | {param} | {lt:.4f} | {bd:.4f} | {100 * (lt / bd - 1):+.2f}% | "
                f"{100 * (lt / best_all - 1):+.2f}% |"
            )

    summary = {
        "setting": s.__dict__,
        "lr": {r: res.to_dict() for r, res in lr_res.items()},
        "wd": {r: res.to_dict() for r, res in wd_res.items()},
        "lr_star_wd_sweeps": lr_star,
        "regret": regrets,
        "wd_exponent_fit": fits,
        "seconds": time.perf_counter() - t0,
    }
    (cache / "transfer_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    cross = max(
        abs(lr_res["mup"].optima[w].log2 - lr_res["mup-package"].optima[w].log2)
        for w in s.widths
        if w in lr_res["mup"].optima and w in lr_res["mup-package"].optima
    )
    print(f"our mup vs mup package: max |Δlog2 lr*| over widths = {cross:.2f}")
    best_wd = min(WD_RULES, key=lambda r: wd_res[r].drift if wd_res[r].drift is not None else math.inf)
    print(f"figures: {figs}/transfer_lr.png, transfer_wd.png; elapsed {time.perf_counter() - t0:.0f} s")

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    print(
        f"lr drift |Δlog2 lr*| {w0}->{w1} ({w1 // w0}x): our mup {fmt(lr_res['mup'].drift)}, "
        f"mup package {fmt(lr_res['mup-package'].drift)}, sp {fmt(lr_res['sp'].drift)} (baseline); "
        f"wd drift: "
        + ", ".join(f"{r.removeprefix('mup-wd-')} {fmt(wd_res[r].drift)}" for r in WD_RULES)
        + f" (best: {best_wd.removeprefix('mup-wd-')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
