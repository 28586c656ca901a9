"""``hptransfer diagnose``: is it safe to scale up? (a thin shell over
:func:`hptransfer.diagnostics.diagnose`). No torch at module level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

HELP = """Train proxies at several widths (or read their checkpoints) and check that the top
singular value of every hidden matrix stays width-invariant; say which layers drift and which
weight-decay width exponent would fix it.

Exit code: 0 safe, 1 drift found, 2 bad input.

Examples:

  hptransfer diagnose --model llama --widths 32,64,128 --rule sqrt --steps 600 --out diag/

  hptransfer diagnose --model mymodels:make_model --task charlm --widths 128,256,512

  hptransfer diagnose --model llama --widths 32,64,128,256 --rule sqrt,linear --steps 800

  hptransfer diagnose --checkpoints w128.pt,w256.pt,w512.pt --rule mup-wd-linear
"""


def _int_list(text: str | None, what: str) -> list[int] | None:
    from hptransfer.cli.main import parse_ints

    return None if text is None else parse_ints(text, what)


def register(app: typer.Typer) -> None:
    @app.command(
        "diagnose",
        help=HELP,
        short_help="Is it safe to scale up? Compare top singular "
        "values across proxy widths; exit 1 on drift.",
    )
    def diagnose_cmd(
        model: Annotated[
            str,
            typer.Option(
                "--model",
                "-m",
                help="Built-in proxy (llama, mlp) or MODULE:FACTORY, FACTORY(width) -> torch.nn.Module.",
            ),
        ] = "llama",
        widths: Annotated[
            str | None,
            typer.Option("--widths", "-w", help="Comma-separated proxy widths, e.g. 128,256,512."),
        ] = None,
        rule: Annotated[
            str | None,
            typer.Option(
                "--rule",
                "-r",
                help="Rule the proxies train (or were trained) with: sp, mup, "
                "mup-wd-linear (linear), mup-wd-sqrt (sqrt), mup-wd-constant. "
                "Several (sqrt,linear): compare them and interpolate the wd "
                "exponent; the first decides the exit code.",
            ),
        ] = None,
        wd_exponent: Annotated[
            float | None,
            typer.Option("--wd-exponent", help="Train with muP and wd ∝ width^E (a custom rule), e.g. 0.81."),
        ] = None,
        steps: Annotated[int, typer.Option("--steps", "-n", help="Training steps per width.")] = 300,
        out: Annotated[
            Path | None,
            typer.Option("--out", "-o", help="Folder for report.json and the figures (PNG+SVG)."),
        ] = None,
        checkpoints: Annotated[
            str | None,
            typer.Option(
                "--checkpoints",
                help="Comma-separated state_dict files (w128.pt,w256.pt): analyse them, no training.",
            ),
        ] = None,
        task: Annotated[
            str | None,
            typer.Option("--task", help="Data for a MODULE:FACTORY model: charlm or regression."),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Proxy config (TOML/JSON); default: the built-in's."),
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 32,
        seed: Annotated[int, typer.Option("--seed", help="Init and batch-order seed.")] = 0,
        gate: Annotated[
            str, typer.Option("--gate", help="Layer classes that decide the verdict: hidden, output, input.")
        ] = "hidden",
        alpha_tol: Annotated[
            float,
            typer.Option("--alpha-tol", help="Slope tolerance: drift when the CI of alpha is beyond ±this."),
        ] = 0.1,
        coord: Annotated[
            bool, typer.Option("--coord/--no-coord", help="Also run the muP coordinate check.")
        ] = True,
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
        rules = [r.strip() for r in rule.split(",") if r.strip()] if rule else [None]
        if ckpt_list is not None and len(rules) > 1:
            fail("--checkpoints takes one --rule: the rule the checkpoints were trained with")
        reports: dict[str, Any] = {}
        try:
            if ckpt_list is not None:
                report = diagnose_checkpoints(
                    ckpt_list, widths=width_list, rule=rules[0], thresholds=thresholds, gate=gates
                )
                reports[report.rule or "checkpoints"] = report
            else:
                assert width_list is not None
                cfg = load_config(config) if config is not None else None
                if wd_exponent is not None:
                    if rules not in ([None], ["custom"]):
                        fail("--wd-exponent sets its own rule (muP, wd ∝ width^E); drop --rule")
                    from hptransfer.diagnostics.api import resolve_model

                    base = resolve_model(model, task=task, config=cfg).config
                    cfg, rules = base.with_rule("custom", wd_exponent=wd_exponent), [None]
                for one in rules:
                    rep = _train_with_progress(
                        diagnose,
                        err_console,
                        model=model,
                        widths=width_list,
                        config=cfg,
                        rule=one,
                        steps=steps,
                        task=task,
                        batch_size=batch_size,
                        seed=seed,
                        thresholds=thresholds,
                        gate=gates,
                        coord=coord,
                    )
                    reports[rep.rule or str(one)] = rep
        except (ConfigError, DiagnosticError) as exc:
            fail(str(exc))
        except ValueError as exc:  # e.g. a factory whose parameters do not change with width
            fail(str(exc))
        report = next(iter(reports.values()))  # the first rule decides the exit code
        two = None
        if len(reports) > 1:
            from hptransfer.diagnostics.api import calibrate_from_reports

            two = calibrate_from_reports(reports)

        written: list[Path] = []
        if out is not None:
            if len(reports) == 1:
                written = _write_outputs(report, out)
            else:
                from hptransfer.diagnostics.plots import plot_rules

                for name, rep in reports.items():
                    written += _write_outputs(rep, out / name)
                written += plot_rules(reports, out / "spectral_rules")
        if as_json:
            import json
            import sys

            if len(reports) == 1:
                sys.stdout.write(report.to_json() + "\n")
            else:
                data = {
                    "rules": {n: r.to_dict() for n, r in reports.items()},
                    "exit_rule": next(iter(reports)),
                    "two_run_calibration": None
                    if two is None
                    else {
                        "wd_exponent": two[0].exponent,
                        "ci": None if two[0].ci is None else list(two[0].ci),
                        "from_rules": list(two[1]),
                    },
                }
                sys.stdout.write(json.dumps(data, indent=2, default=lambda x: None) + "\n")
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
                    + (
                        f"[yellow]activation scale moves with width in {', '.join(bad_coord[:6])}[/]"
                        if bad_coord
                        else "[green]activation scales flat in width[/]"
                    )
                    + f" (|slope| tolerance {report.coord.tolerance:g})"
                )
            if len(reports) > 1:
                console.print(_rules_table(reports, two))
            if written:
                console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
            colour = "green" if report.safe else "red"
            prefix = f"{report.rule}: " if len(reports) > 1 else ""
            console.print(f"[bold {colour}]{prefix}{report.summary()}[/]", highlight=False)
        raise typer.Exit(report.exit_code)


def _rules_table(reports: dict[str, Any], two: Any) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title="rules compared (the first one decides the exit code)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("rule", "hidden σmax ratio", "pooled alpha [CI]", "drifting", "one-run e*", "val loss"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for name, rep in reports.items():
        p, cal = rep.pooled, rep.calibration
        ci = "" if p is None or p.ci is None else f" [{p.ci[0]:+.2f},{p.ci[1]:+.2f}]"
        widest = max(rep.val_loss) if rep.val_loss else None
        table.add_row(
            name,
            "-" if p is None else f"{p.ratio:.3g}",
            "-" if p is None else f"{p.alpha:+.2f}{ci}",
            f"{len(rep.drifting)}/{len(rep.gated())}",
            "-" if cal is None else f"{cal.exponent:.2f}",
            "-" if widest is None else f"{rep.val_loss[widest]:.4g} @ {widest}",
        )
    if two is not None:
        cal, (a, b) = two
        band = "" if cal.ci is None else f" [{cal.ci[0]:.2f}, {cal.ci[1]:.2f}]"
        table.caption = (
            f"two-run calibration ({a} & {b}): sigma_max is width-invariant at "
            f"wd ∝ width^{cal.exponent:.2f}{band} (muP lr ∝ 1/width); try "
            f"--rule custom --wd-exponent {cal.exponent:.2f} in `hptransfer suggest`."
        )
        table.caption_justify = "left"
    return table


def _train_with_progress(diagnose: Any, err_console: Any, **kwargs: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]width {task.fields[width]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
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
