"""``hptransfer stn``: tune regularisation hyperparameters within one training run (STN / Delta-STN).

No torch at module level: the command imports it when it runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["parse_hyper", "register"]


def parse_hyper(text: str) -> dict[str, Any]:
    """``NAME=INIT:LOW,HIGH[@log|@logit]`` -> keyword arguments of ``HyperSpec``.

    Example:
        >>> parse_hyper("dropout=0.1:0,0.9")
        {'name': 'dropout', 'init': 0.1, 'low': 0.0, 'high': 0.9, 'transform': None}
    """
    form = "write NAME=INIT:LOW,HIGH, e.g. dropout=0.1:0,0.9 or weight_decay=1e-3:1e-6,1"
    name, eq, rest = text.partition("=")
    if not eq or not name.strip():
        raise ValueError(f"--hyper {text!r}: {form}")
    transform = None
    if "@" in rest:
        rest, _, transform = rest.partition("@")
        if transform not in ("log", "logit"):
            raise ValueError(f"--hyper {text!r}: transform after @ must be log or logit")
    init, colon, bounds = rest.partition(":")
    parts = bounds.split(",")
    if not colon or len(parts) != 2:
        raise ValueError(f"--hyper {text!r}: {form}")
    try:
        init_f, lo, hi = float(init), float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"--hyper {text!r}: INIT, LOW and HIGH must be numbers; {form}") from None
    return {"name": name.strip(), "init": init_f, "low": lo, "high": hi, "transform": transform}


def register(app: typer.Typer) -> None:
    @app.command("stn")
    def stn_cmd(
        task: Annotated[
            str, typer.Option("--task", "-t", help="Built-in task: classify | regression.")
        ] = "classify",
        hyper: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Option(
                "--hyper",
                "-H",
                help="NAME=INIT:LOW,HIGH\\[@log|@logit], repeatable. Names: "
                "dropout[.<layer>], weight_decay[.<layer>], input_noise, input_mask, "
                "label_smoothing. Default: the task's set.",
            ),
        ] = None,
        epochs: Annotated[int, typer.Option("--epochs", "-e", help="Passes over the training set.")] = 60,
        delta: Annotated[bool, typer.Option("--delta", help="Delta-STN (centred response).")] = False,
        linearize: Annotated[
            bool,
            typer.Option(
                "--linearize", help="Delta-STN: linearise the output in the response (JVP; ~4-6x slower)."
            ),
        ] = False,
        out: Annotated[
            Optional[Path],  # noqa: UP045
            typer.Option(
                "--out", "-o", help="Output folder (checkpoint, plot, configs). Default: runs/stn-<task>."
            ),
        ] = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue from the checkpoint in --out.")
        ] = False,
        seed: Annotated[int, typer.Option("--seed", help="Seed of data and run.")] = 0,
        lr: Annotated[Optional[float], typer.Option("--lr", help="Adam lr of the weights.")] = None,  # noqa: UP045
        hyper_lr: Annotated[float, typer.Option("--hyper-lr", help="Adam lr of the hyperparameters.")] = 0.1,
        tau: Annotated[float, typer.Option("--tau", help="Entropy weight.")] = 1e-3,
        t_train: Annotated[int, typer.Option("--t-train", help="Training steps per cycle.")] = 5,
        t_val: Annotated[int, typer.Option("--t-val", help="Validation steps per cycle.")] = 1,
        warmup: Annotated[
            Optional[int],  # noqa: UP045
            typer.Option("--warmup", help="Training steps before tuning. Default: a quarter of them."),
        ] = None,
        checkpoint_every: Annotated[
            int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")
        ] = 200,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Tune dropout, weight decay, input noise and label smoothing in one training run.

        Example: hptransfer stn --task classify --hyper dropout=0.1:0,0.9
        --hyper weight_decay=1e-3:1e-6,1 --epochs 60 --out runs/stn
        """
        import json
        import sys

        from hptransfer.cli.main import console, fail

        if epochs < 1:
            fail(f"--epochs must be >= 1, got {epochs}")
        try:
            specs_kw = [parse_hyper(h) for h in (hyper or [])]
        except ValueError as exc:
            fail(str(exc))

        import torch

        from hptransfer.stn import (
            HyperSpec,
            StnCheckpointError,
            StnConfig,
            StnDivergedError,
            StnTuner,
            TensorBatches,
            make_task,
        )
        from hptransfer.stn.report import write_outputs

        torch.set_num_threads(min(torch.get_num_threads(), 4))
        try:
            the_task = make_task(task, seed=seed)
            specs = [HyperSpec(**kw) for kw in specs_kw] or list(the_task.default_hypers)
            n_batches = -(-the_task.train[0].shape[0] // the_task.batch_size)
            warmup_steps = warmup if warmup is not None else epochs * n_batches // 4
            cfg = StnConfig(
                lr=lr if lr is not None else the_task.lr,
                hyper_lr=hyper_lr,
                tau=tau,
                t_train=t_train,
                t_val=t_val,
                warmup_steps=warmup_steps,
                delta=delta,
                linearize=linearize,
                checkpoint_every=checkpoint_every,
                seed=seed,
            )
            tuner = StnTuner(the_task.make_model(), specs, loss=the_task.loss, config=cfg)
        except ValueError as exc:
            fail(str(exc))
        out_dir = out if out is not None else Path("runs") / f"stn-{task}"
        ckpt = out_dir / "checkpoint.pt"
        if resume and not ckpt.exists():
            fail(f"--resume: no checkpoint at {ckpt}; run without --resume to start")
        if not resume and ckpt.exists():
            fail(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
        train = TensorBatches(*the_task.train, the_task.batch_size)
        val = TensorBatches(*the_task.val, 128)
        total = epochs * len(train)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        def fmt(values: dict[str, float]) -> str:
            return "  ".join(f"{k}={v:.3g}" for k, v in values.items())

        progress = Progress(
            TextColumn("[bold]stn[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[hp]}"),
            console=console,
            disable=as_json,
            transient=False,
        )
        kind = "Delta-STN" if delta else "STN"
        try:
            with progress:
                bar = progress.add_task(kind, total=total, hp=fmt(tuner.values()))

                def callback(t: StnTuner, record: dict[str, Any]) -> None:
                    progress.update(bar, completed=record["n_train"], hp=fmt(record["values"]))

                result = tuner.fit(
                    train,
                    val,
                    steps=total,
                    checkpoint=ckpt,
                    resume=resume,
                    eval_every=len(train) * max(1, epochs // 20),
                    callback=callback,
                )
        except StnCheckpointError as exc:
            fail(str(exc))
        except StnDivergedError as exc:
            fail(str(exc), code=1)
        except ValueError as exc:
            fail(str(exc))
        test_loss = tuner.evaluate([the_task.test])
        log_names = [s.name for s in tuner.hyper.specs if s.transform == "log"]
        files = write_outputs(
            out_dir,
            values=result.values,
            sigma=result.sigma,
            trajectory=result.trajectory,
            lr=cfg.lr,
            width=the_task.width,
            name=f"stn-{task}",
            log_names=log_names,
            extra={
                "method": kind,
                "final_val_loss": result.final_val_loss,
                "test_loss": test_loss,
                "train_steps": result.train_steps,
                "val_steps": result.val_steps,
            },
        )
        if as_json:
            sys.stdout.write(
                json.dumps(
                    {
                        "method": kind,
                        "values": result.values,
                        "sigma": result.sigma,
                        "final_val_loss": result.final_val_loss,
                        "test_loss": test_loss,
                        "files": {k: str(v) for k, v in files.items()},
                    },
                    indent=2,
                )
                + "\n"
            )
            return
        from rich.table import Table

        table = Table(title=f"{kind} on {task}: {the_task.description}", title_justify="left")
        table.add_column("hyperparameter")
        table.add_column("tuned", justify="right")
        table.add_column("sigma (unconstrained)", justify="right")
        for name, value in result.values.items():
            table.add_row(name, f"{value:.4g}", f"{result.sigma[name]:.3g}")
        console.print(table)
        vl = result.final_val_loss
        console.print(
            f"validation loss {vl:.4f} · test loss {test_loss:.4f}"
            + ("" if math.isfinite(vl) else " (diverged)")
        )
        console.print(
            f"plot: {files['png']} · all values: {files['json']} · config: {files['toml']} "
            f"(carry it: hptransfer suggest --config {files['toml']} --width 1024)"
        )
