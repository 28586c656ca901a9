"""``hptransfer sweep``: lr or wd sweeps across widths, the classic muP transfer plot.

No torch at module level (the CLI's ``suggest`` must start fast); everything heavy is imported
inside the command.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hptransfer.cli.common import console, fail, parse_ints
from hptransfer.cli.safety import check_out_dir, command_line, disk_error
from hptransfer.scaling import ConfigError, load_config
from hptransfer.tuning.storage import mask_url


def parse_grid(text: str) -> tuple[float, ...]:
    """``-10:-4`` or ``-10:-4:0.5`` (log2 range, inclusive) or ``-10,-8,-6`` (log2 list).

    Raises:
        ConfigError: not numbers in one of those forms, or a grid :func:`log2_grid` refuses.
    """
    from hptransfer.tuning.sweep import log2_grid, log2_values

    t = text.replace(" ", "")
    try:
        if ":" in t:
            parts = [float(x) for x in t.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
        else:
            parts = [float(x) for x in t.split(",") if x]
            if not parts:
                raise ValueError
    except ValueError:
        raise ConfigError(
            f"--grid must be log2 exponents: START:STOP[:STEP] or a comma list, got {text!r} "
            "(e.g. --grid=-10:-4)"
        ) from None
    try:
        return log2_grid(*parts) if ":" in t else log2_values(parts)
    except ConfigError as exc:
        raise ConfigError(f"--grid {text}: {exc}") from None


def sweep_cmd(
    rule: Annotated[
        str | None, typer.Option("--rule", "-r", help="sp | mup | mup-wd-linear | mup-wd-sqrt | …")
    ] = None,
    param: Annotated[str, typer.Option("--param", "-p", help="lr or wd: which base value to sweep.")] = "lr",
    widths: Annotated[
        str, typer.Option("--widths", "-w", help="Increasing widths, comma-separated.")
    ] = "64,128,256",
    grid: Annotated[
        str | None,
        typer.Option(
            "--grid", "-g", help="log2 grid: START:STOP[:STEP] or a list. Default lr -10:-4, wd -6:1."
        ),
    ] = None,
    task: Annotated[
        str, typer.Option("--task", "-t", help="charlm (llama on stdlib bytes) or regression (MLP).")
    ] = "charlm",
    steps: Annotated[int, typer.Option("--steps", help="Training steps per run.")] = 200,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 32,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, comma-separated.")] = "0",
    train_tokens: Annotated[
        int | None, typer.Option("--train-tokens", help="charlm: small training set (wd regime).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Proxy config (TOML/JSON). Default: the task's built-in."),
    ] = None,
    base_lr: Annotated[float | None, typer.Option("--lr", help="Base lr held fixed in a wd sweep.")] = None,
    base_wd: Annotated[float | None, typer.Option("--wd", help="Base wd held fixed in an lr sweep.")] = None,
    schedule: Annotated[str, typer.Option("--schedule", help="constant | cosine | linear")] = "constant",
    warmup: Annotated[int, typer.Option("--warmup", help="Linear warmup steps.")] = 0,
    model: Annotated[
        str | None, typer.Option("--model", help="Your model factory 'module:function' (takes width).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory (results, figures, sweep.db).")
    ] = Path("sweep-out"),
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL instead of <out>/sweep.db.")
    ] = None,
    study_name: Annotated[Optional[str], typer.Option("--study-name", help="Optuna study name.")] = None,  # noqa: UP045
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train the proxy at several widths over a grid of base lr (or wd); plot loss vs log2 value.

    Resumable: rerun the same command after a kill and finished runs are not repeated.

    Example: hptransfer sweep --rule mup --widths 64,128,256 --grid=-10:-4 --steps 300
    """
    from dataclasses import replace

    from hptransfer.factories import load_factory

    if param not in ("lr", "wd"):
        fail(f"--param must be lr or wd, got {param!r}")
    if model is not None and not model.strip():
        fail("--model is empty; give MODULE:FACTORY, or leave it out for the task's built-in model")
    try:
        g = parse_grid(grid if grid is not None else ("-10:-4" if param == "lr" else "-6:1"))
        factory = load_factory(model) if model else None
    except ValueError as exc:
        fail(str(exc))
    w = parse_ints(widths, "--widths")
    s = parse_ints(seeds, "--seeds")
    check_out_dir(out)

    import torch

    from hptransfer.tuning.sweep import SweepSpec, run_sweep

    torch.set_num_threads(max(1, threads))
    try:
        spec = SweepSpec(
            task=task,
            rule=rule,
            widths=tuple(w),
            param="lr" if param == "lr" else "wd",
            grid=g,
            seeds=tuple(s),
            steps=steps,
            batch_size=batch_size,
            data_kwargs={"train_tokens": train_tokens} if train_tokens else {},
            schedule=schedule,
            warmup=warmup,
        )
        if config:
            cfg = load_config(config)
        elif model:  # a user's factory keeps its own init
            from hptransfer.factories import resolve_model

            cfg = resolve_model(model, task=spec.task).config
        else:
            cfg = spec.resolved_config()
        if base_lr is not None:
            cfg = replace(cfg, lr=base_lr)
        if base_wd is not None:
            cfg = replace(cfg, weight_decay=base_wd)
        spec = replace(spec, config=cfg)
        result = run_sweep(
            spec, out, storage=storage, study_name=study_name, factory=factory, progress=not as_json
        )
    except KeyboardInterrupt:
        where = mask_url(storage) if storage else f"{out}/sweep.db"
        fail(f"interrupted; finished runs are kept in {where}; to go on: {command_line()}", 130)
    except ValueError as exc:  # ConfigError, or e.g. an unknown schedule or task
        fail(str(exc))
    except Exception as exc:  # a full disk: SQLite's "database or disk is full", ENOSPC on a figure
        why = disk_error(exc)
        if why is None:
            raise
        fail(f"cannot write in {out} ({why}); finished runs are kept; free space, then: {command_line()}", 1)
    if not result.optima:
        fail(
            f"every run diverged (no finite validation loss at any width); the runs are saved in {out}; "
            "try smaller values, e.g. --grid=-12:-6",
            1,
        )
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(
        title=f"optimum base {param} per width ({result.spec['rule']}, {task})", title_justify="left"
    )
    for col in ("width", f"log2 {param}*", f"{param}*", "loss", "note"):
        table.add_column(col, justify="right")
    for width, opt in sorted(result.optima.items()):
        n_div = sum(r.diverged for r in result.records if r.width == width)
        note = "at grid edge" if opt.at_edge else ("grid min" if not opt.fitted else "")
        if n_div:
            note += (", " if note else "") + f"{n_div} diverged"
        table.add_row(str(width), f"{opt.log2:.2f}", f"{opt.value:.3g}", f"{opt.loss:.4f}", note)
    console.print(table)
    d = result.drift
    if d is not None and not math.isnan(d):
        console.print(f"drift (max − min of log2 {param}* over widths {w[0]}..{w[-1]}): [bold]{d:.2f}[/]")
    console.print(f"results: {out}/sweep_{param}.json, .csv; figure: {out}/sweep_{param}.png, .svg")
