"""``hptransfer diagnose``: is it safe to scale up? (a thin shell over
:func:`hptransfer.diagnostics.diagnose`). No torch at module level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

HELP = """Train proxies at several widths (or read their checkpoints) and check that the top
singular value of every hidden matrix stays width-invariant; say which layers drift and which
weight-decay width exponent would fix it.

Exit code: 0 safe, 1 drift found, 2 bad input.

Examples:

  hptransfer diagnose --model llama --widths 32,64,128 --rule sqrt --steps 600 --out diag/

  hptransfer diagnose --model mymodels:make_model --task charlm --widths 128,256,512

  hptransfer diagnose --checkpoints w128.pt,w256.pt,w512.pt --rule mup-wd-linear
"""


def _int_list(text: str | None, what: str) -> list[int] | None:
    from hptransfer.cli.main import fail

    if text is None:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            fail(f"{what}: {part!r} is not an integer; give a comma-separated list like 128,256,512")
    return out


def register(app: typer.Typer) -> None:
    @app.command("diagnose", help=HELP)
    def diagnose_cmd(
        model: Annotated[str, typer.Option(
            "--model", "-m", help="Built-in proxy (llama, mlp) or MODULE:FACTORY, "
                                  "FACTORY(width) -> torch.nn.Module.")] = "llama",
        widths: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--widths", "-w", help="Comma-separated proxy widths, e.g. 128,256,512.")] = None,
        rule: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--rule", "-r", help="Rule the proxies train (or were trained) with: sp, mup, "
                                 "mup-wd-linear (linear), mup-wd-sqrt (sqrt), mup-wd-constant.")] = None,
        steps: Annotated[int, typer.Option("--steps", "-n", help="Training steps per width.")] = 300,
        out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
            "--out", "-o", help="Folder for report.json and the figures (PNG+SVG).")] = None,
        checkpoints: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--checkpoints", help="Comma-separated state_dict files (w128.pt,w256.pt): "
                                  "analyse them, no training.")] = None,
        task: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--task", help="Data for a MODULE:FACTORY model: charlm or regression.")] = None,
        config: Annotated[Optional[Path], typer.Option(  # noqa: UP045
            "--config", "-c", help="Proxy config (TOML/JSON); default: the built-in's.")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 32,
        seed: Annotated[int, typer.Option("--seed", help="Init and batch-order seed.")] = 0,
        gate: Annotated[str, typer.Option(
            "--gate", help="Layer classes that decide the verdict: hidden, output, input.")] = "hidden",
        alpha_tol: Annotated[float, typer.Option(
            "--alpha-tol", help="Slope tolerance: drift when the CI of alpha is beyond ±this.")] = 0.1,
        coord: Annotated[bool, typer.Option(
            "--coord/--no-coord", help="Also run the muP coordinate check.")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ) -> None:
        from hptransfer.cli.main import console, err_console, fail

        gates = tuple(g.strip() for g in gate.split(",") if g.strip())
        bad = [g for g in gates if g not in ("hidden", "output", "input", "fixed")]
        if bad or not gates:
            fail(f"--gate: unknown class {bad[0] if bad else gate!r}; use hidden, output, input or fixed")
        if steps < 1:
            fail(f"--steps must be >= 1, got {steps}")
        if batch_size < 1:
            fail(f"--batch-size must be >= 1, got {batch_size}")
        if not alpha_tol >= 0:
            fail(f"--alpha-tol must be >= 0, got {alpha_tol}")
        width_list = _int_list(widths, "--widths")
        ckpt_list = None if checkpoints is None else [c.strip() for c in checkpoints.split(",") if c.strip()]
        if ckpt_list is None and not width_list:
            fail("give --widths (e.g. --widths 128,256,512) or --checkpoints w128.pt,w256.pt")

        # torch and the diagnostics load here, not at CLI start-up
        from hptransfer.diagnostics.api import diagnose, diagnose_checkpoints
        from hptransfer.diagnostics.fit import Thresholds
        from hptransfer.diagnostics.report import DiagnosticError, render
        from hptransfer.scaling import ConfigError, load_config

        thresholds = Thresholds(alpha_tol=alpha_tol)
        try:
            if ckpt_list is not None:
                report = diagnose_checkpoints(ckpt_list, widths=width_list, rule=rule,
                                              thresholds=thresholds, gate=gates)
            else:
                assert width_list is not None
                cfg = load_config(config) if config is not None else None
                report = _train_with_progress(
                    diagnose, err_console, model=model, widths=width_list, config=cfg, rule=rule,
                    steps=steps, task=task, batch_size=batch_size, seed=seed,
                    thresholds=thresholds, gate=gates, coord=coord,
                )
        except (ConfigError, DiagnosticError) as exc:
            fail(str(exc))
        except ValueError as exc:  # e.g. a factory whose parameters do not change with width
            fail(str(exc))

        if out is not None:
            written = _write_outputs(report, out)
        if as_json:
            import sys

            sys.stdout.write(report.to_json() + "\n")
        else:
            if not console.is_terminal and console.width < 150:
                from rich.console import Console

                console = Console(width=150)  # piped output: room for one column per width
            console.print(render(report))
            for problem in report.problems:
                console.print(f"[yellow]warning:[/] {problem}", highlight=False)
            if report.coord is not None:
                bad_coord = report.coord.unstable()
                console.print(
                    "coordinate check: "
                    + (f"[yellow]activation scale moves with width in {', '.join(bad_coord[:6])}[/]"
                       if bad_coord else "[green]activation scales flat in width[/]")
                    + f" (|slope| tolerance {report.coord.tolerance:g})"
                )
            if out is not None:
                console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
            colour = "green" if report.safe else "red"
            console.print(f"[bold {colour}]{report.summary()}[/]", highlight=False)
        raise typer.Exit(report.exit_code)


def _train_with_progress(diagnose: Any, err_console: Any, **kwargs: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]width {task.fields[width]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("steps"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        tasks: dict[int, Any] = {}
        for w in kwargs["widths"]:
            tasks[w] = bar.add_task("train", total=kwargs["steps"], width=w)

        def progress(width: int, step: int, total: int) -> None:
            if width in tasks:
                bar.update(tasks[width], completed=step, total=total)

        return diagnose(progress=progress, **kwargs)


def _write_outputs(report: Any, out: Path) -> list[Path]:
    from hptransfer.diagnostics.plots import plot_coord, plot_sigma_history, plot_sigma_vs_width

    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(report.to_json() + "\n", encoding="utf-8")
    written = [path]
    written += plot_sigma_vs_width(report, out / "spectral_width")
    if report.history:
        written += plot_sigma_history(report, out / "spectral_history")
    if report.coord is not None and len(report.coord.widths) >= 2:
        written += plot_coord(report.coord, out / "spectral_coord")
    return written
