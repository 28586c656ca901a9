"""``hptransfer stn``: tune regularisation hyperparameters within one training run (STN / Delta-STN).

No torch at module level: the command imports it when it runs. The loop settings default to
:class:`hptransfer.stn.StnConfig`'s (options left out are not passed, so the CLI and the Python
API share one set of defaults; ``tests/test_stn_cli.py`` checks the help text against it).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hptransfer.cli.common import console, fail, parse_width
from hptransfer.cli.safety import check_out_dir, disk_error

__all__ = ["EPILOG", "parse_hyper", "resume_command", "stn_cmd"]

EPILOG = (
    "Hyperparameters (--hyper NAME=INIT:LOW,HIGH): dropout[.<layer>], weight_decay (AdamW's "
    "decoupled decay on weight matrices, the value suggest scales with width; "
    "weight_decay.hidden|output|vector|<layer>), l2[.<layer>] (an L2 term c/2 ||W||^2 in the "
    "training loss), input_noise, input_mask, label_smoothing, augment (strength of the task's data "
    "augmentation: random rotation, scale and shift on --task glyphs). --model MODULE:FACTORY trains "
    "FACTORY(--width) on the task's data: its nn.Linear/Conv2d/Embedding layers become "
    "hyperparameter-conditioned (--skip PATH keeps one plain), its nn.Dropout rates tunable."
)


def parse_hyper(text: str) -> dict[str, Any]:
    """``NAME=INIT:LOW,HIGH[@log|@logit]`` -> keyword arguments of ``HyperSpec``.

    Example:
        >>> parse_hyper("dropout=0.1:0,0.9")
        {'name': 'dropout', 'init': 0.1, 'low': 0.0, 'high': 0.9, 'transform': None}
    """
    form = "write NAME=INIT:LOW,HIGH, e.g. dropout=0.1:0,0.9 or weight_decay=0.1:1e-3,10"
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
    if not all(math.isfinite(v) for v in (init_f, lo, hi)):
        raise ValueError(f"--hyper {text!r}: INIT, LOW and HIGH must be finite numbers; {form}")
    return {"name": name.strip(), "init": init_f, "low": lo, "high": hi, "transform": transform}


def resume_command(ctx: typer.Context) -> str:
    """The command line that resumes this run: its explicitly given options plus ``--resume``."""
    parts = ["hptransfer", "stn"]
    for param in ctx.command.params:
        if getattr(param, "param_type_name", "") != "option" or param.name in (None, "resume"):
            continue
        opts: list[str] = list(getattr(param, "opts", []))
        secondary: list[str] = list(getattr(param, "secondary_opts", []))
        source = ctx.get_parameter_source(param.name)
        if source is None or getattr(source, "name", "DEFAULT") == "DEFAULT":
            continue
        value = ctx.params.get(param.name)
        flag = opts[0]
        if getattr(param, "is_flag", False):
            if value or secondary:
                parts.append(flag if value else secondary[0])
        elif isinstance(value, (list, tuple)):
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    parts.append("--resume")
    return " ".join(shlex.quote(p) for p in parts)


def stn_cmd(
    ctx: typer.Context,
    task: Annotated[
        str,
        typer.Option(
            "--task", "-t", help="Data (and built-in model): classify | regression-small | glyphs (images)."
        ),
    ] = "classify",
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--model", "-m", help="Your model: MODULE:FACTORY, FACTORY(width) -> torch module for the task."
        ),
    ] = None,
    width: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--width", "-w", help="Width for --model (the proxy's base width). Default: the task's."
        ),
    ] = None,
    skip: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--skip", help="Module path to keep plain (not hyperparameter-conditioned); repeatable."
        ),
    ] = None,
    hyper: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--hyper", "-H", help="NAME=INIT:LOW,HIGH\\[@log|@logit], repeatable. Default: the task's set."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", "-e", help="Passes over the training set.")] = 60,
    config: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--config", "-c", help="Base proxy config for proxy.toml (rule, head_dim, ...)."),
    ] = None,
    delta: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--delta/--no-delta", help="Centred response (Delta-STN). Default: on."),
    ] = None,
    linearize: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--linearize", help="Delta-STN: linearise the output in the response (~4-6x slower)."),
    ] = None,
    per_example: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--per-example", help="One perturbation per example (lower variance, slower)."),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--out", "-o", help="Output folder (checkpoint, plot, configs). Default: runs/stn-<task>."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the checkpoint in --out.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of data, initial weights and run.")] = 0,
    lr: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--lr", help="Adam lr of the weights. Default: the task's (1e-3)."),
    ] = None,
    hyper_lr: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--hyper-lr", help="Adam lr of the hyperparameters. Default: 0.03."),
    ] = None,
    tau: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--tau", help="Entropy weight. Default: 0.001."),
    ] = None,
    t_train: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--t-train", help="Training steps per cycle. Default: 5."),
    ] = None,
    t_val: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--t-val", help="Validation steps per cycle. Default: 1."),
    ] = None,
    warmup: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--warmup", help="Training steps before tuning. Default: 0.25 of them."),
    ] = None,
    trust: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--trust", help="Tracking trust region on hyper steps (0: off). Default: 0.5."),
    ] = None,
    anneal: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--anneal", help="Share of tuning over which the hyper-lr decays to 0. Default: 0.3."),
    ] = None,
    checkpoint_every: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--checkpoint-every", help="Steps between checkpoints. Default: 200."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Tune dropout, weight decay, input noise, label smoothing and augmentation in one training run.

    Example: hptransfer stn --task classify --hyper dropout=0.1:0,0.9 --hyper l2=1e-3:1e-6,1
    --epochs 60 --out runs/stn
    """
    if epochs < 1:
        fail(f"--epochs must be >= 1, got {epochs}")
    given_width = parse_width(width, "--width")
    if given_width is not None and model is None:
        fail("--width needs --model (the built-in models have the task's width)")
    try:
        specs_kw = [parse_hyper(h) for h in (hyper or [])]
    except ValueError as exc:
        fail(str(exc))
    base = None
    if config is not None:
        from hptransfer.scaling import ConfigError, load_config

        try:
            base = load_config(config)
        except ConfigError as exc:
            fail(str(exc))
    factory = None
    if model is not None:
        from hptransfer.factories import load_factory
        from hptransfer.scaling import ConfigError

        try:
            factory = load_factory(model)
        except ConfigError as exc:
            fail(str(exc))

    import torch

    from hptransfer.stn import (
        HyperSpec,
        StnCheckpointError,
        StnConfig,
        StnDivergedError,
        StnInterrupted,
        StnTuner,
        TensorBatches,
        make_task,
    )
    from hptransfer.stn.report import write_outputs

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    given: dict[str, Any] = {
        "lr": lr,
        "hyper_lr": hyper_lr,
        "tau": tau,
        "t_train": t_train,
        "t_val": t_val,
        "warmup_steps": warmup,
        "trust": (None if trust == 0 else trust) if trust is not None else None,
        "anneal": anneal,
        "checkpoint_every": checkpoint_every,
        "delta": delta,
        "linearize": linearize,
        "per_example": per_example,
    }
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if trust == 0:
        overrides["trust"] = None
    try:
        the_task = make_task(task, seed=seed)
        specs = [HyperSpec(**kw) for kw in specs_kw] or list(the_task.default_hypers)
        overrides.setdefault("lr", the_task.lr)
        cfg = StnConfig(seed=seed, **overrides)
    except ValueError as exc:
        fail(str(exc))
    proxy_width = the_task.width if given_width is None else given_width
    if base is not None:  # proxy.toml takes the base width: check it fits before training
        from dataclasses import replace

        from hptransfer.scaling import ConfigError

        try:
            replace(base, base_width=proxy_width)
        except ConfigError as exc:
            fail(f"--config {config}: {exc}")
    out_dir = out if out is not None else Path("runs") / f"stn-{task}"
    ckpt = out_dir / "checkpoint.pt"
    if resume and not ckpt.exists():
        fail(f"--resume: no checkpoint at {ckpt}; run without --resume to start")
    if not resume and ckpt.exists():
        fail(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file; give a folder")
    check_out_dir(out_dir)  # read-only or full: refused before training

    def build() -> torch.nn.Module:
        if factory is None:
            return the_task.make_model()
        built = factory(proxy_width)
        if not isinstance(built, torch.nn.Module):
            raise TypeError(
                f"--model {model}: FACTORY({proxy_width}) returned {type(built).__name__}, not a module"
            )
        return built

    try:
        tuner = StnTuner(
            build,
            specs,
            loss=the_task.loss,
            config=cfg,
            skip=tuple(skip or ()),
            augment=getattr(the_task.data, "augment_with", None),  # the task's data augmentation
        )
        with torch.no_grad():
            tuner.evaluate([(the_task.train[0][:2], the_task.train[1][:2])])
    except (ValueError, TypeError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:  # a user's factory or forward can raise anything
        where = f"--model {model}" if model else f"task {task}"
        first = str(exc).splitlines()[0] if str(exc) else ""
        x_shape = tuple(the_task.train[0].shape[1:])
        fail(
            f"{where}: the model failed on the task's inputs (batch × {x_shape}, "
            f"{the_task.loss} targets): {type(exc).__name__}: {first[:200]}"
        )
    try:  # the output must be writable before any training is spent
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        fail(f"--out {out_dir}: cannot write there ({exc.strerror or exc}); choose another folder")
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
    kind = ("Delta-STN" + (" (linearised)" if cfg.linearize else "")) if cfg.delta else "STN"
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
        # inside the try: a Ctrl-C (or a full disk) while the results are written is reported
        # like one during training (the last checkpoint holds the finished run; resuming it
        # writes them)
        test_loss = tuner.evaluate([the_task.test])
        log_names = [s.name for s in tuner.hyper.specs if s.transform == "log"]
        name = f"stn-{task}" if model is None else f"stn-{model.rpartition(':')[2]}-{task}"
        files = write_outputs(
            out_dir,
            values=result.values,
            sigma=result.sigma,
            trajectory=result.trajectory,
            lr=cfg.lr,
            width=proxy_width,
            name=name,
            log_names=log_names,
            base=base,
            extra={
                "method": kind,
                "final_val_loss": result.final_val_loss,
                "test_loss": test_loss,
                "train_steps": result.train_steps,
                "val_steps": result.val_steps,
                "warnings": result.extra.get("warnings", []),
                "config": {k: v for k, v in cfg.__dict__.items()},
            },
        )
    except StnInterrupted as exc:
        fail(
            f"interrupted at step {exc.step}; saved {exc.checkpoint} (that step). Resume with: "
            f"{resume_command(ctx)}",
            130,
        )
    except KeyboardInterrupt:
        saved = tuner.last_checkpoint
        what = (
            f"the last checkpoint is {saved[0]} (step {saved[1]})" if saved else "no checkpoint was written"
        )
        fail(f"interrupted; {what}. Resume with: {resume_command(ctx)}", 130)
    except StnCheckpointError as exc:
        fail(str(exc))
    except StnDivergedError as exc:
        fail(str(exc), code=1)
    except ValueError as exc:
        fail(str(exc))
    except (OSError, RuntimeError) as exc:  # torch.save on a full disk raises RuntimeError
        why = disk_error(exc)
        if why is None:
            raise
        saved = tuner.last_checkpoint
        kept = f"the last checkpoint {saved[0]} (step {saved[1]}) is intact" if saved else "no checkpoint"
        fail(f"cannot write in {out_dir} ({why}); {kept}; free space, then: {resume_command(ctx)}", 1)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "method": kind,
                    "values": result.values,
                    "sigma": result.sigma,
                    "final_val_loss": result.final_val_loss,
                    "test_loss": test_loss,
                    "warnings": result.extra.get("warnings", []),
                    "files": {k: str(v) for k, v in files.items()},
                },
                indent=2,
            )
            + "\n"
        )
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{kind} on {task}: {the_task.description}", title_justify="left")
    table.add_column("hyperparameter")
    table.add_column("tuned", justify="right")
    table.add_column("sigma (unconstrained)", justify="right")
    for hp_name, value in result.values.items():
        table.add_row(hp_name, f"{value:.4g}", f"{result.sigma[hp_name]:.3g}")
    console.print(table)
    vl = result.final_val_loss
    console.print(
        f"validation loss {vl:.4f} · test loss {test_loss:.4f}" + ("" if math.isfinite(vl) else " (diverged)")
    )
    for warning in result.extra.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print(
        f"plot: {files['png']} · all values: {files['json']} · config: {files['toml']} "
        f"(carry it: hptransfer suggest --config {files['toml']} --width 1024)",
        highlight=False,
    )
