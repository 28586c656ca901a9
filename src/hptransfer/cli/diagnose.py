"""``hptransfer diagnose``: is it safe to scale up? (a thin shell over
:func:`hptransfer.diagnostics.diagnose`). No torch at module level."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from hptransfer.cli.common import console, err_console, fail, parse_ints
from hptransfer.cli.safety import check_out_dir, command_line, disk_error

__all__ = ["BUILTIN_DIAGNOSE_WD", "DEFAULT_WIDTHS", "HELP", "SHORT_HELP", "diagnose_cmd"]

#: Defaults of the training mode, chosen so that `hptransfer diagnose --model llama` covers 4
#: AdamW timescales (the steps default to that, per rule) and finishes in a few minutes on 2 CPU
#: cores (benchmarks/diagnose_time.py measures it).
DEFAULT_WIDTHS = "16,32,48,64,96,128"
#: Base weight decay of the built-in proxies in `diagnose` (their config's 0.1 gives
#: tau = 640 steps; 1.0 gives 64, so 4 timescales take 256 steps under the linear rule).
#: --wd or --config override it.
BUILTIN_DIAGNOSE_WD = 1.0

HELP = f"""Train proxies at several widths (or read their checkpoints) and check that the top
singular value of every hidden matrix stays width-invariant; say which layers drift and which
weight-decay width exponent would fix it, pooled and per class (attention, MLP, readout: when
their intervals part, the per-class exponents are printed as the config's wd_exponents). Each
matrix also shows sigma_max / sqrt(fan_out/fan_in), the spectral condition (information), and
each run the AdamW timescales it covered per class.

Exit code: 0 safe (every hidden matrix conclusively width-invariant, runs >= 3 AdamW
timescales long), 1 drift (a hidden matrix conclusively grows or shrinks), 2 bad input,
3 inconclusive (too short a run, too few widths or too noisy: the output says what would
make it conclusive). A CI gate passes on 0 only.

Defaults: --widths {DEFAULT_WIDTHS}; --steps enough for 4 AdamW timescales tau = 1/(lr·wd)
at the slowest width (256 for the built-in llama under the linear rule); one torch thread per
run; the built-in proxies train with base weight decay {BUILTIN_DIAGNOSE_WD:g} here (tau = 64
steps at lr 2^-6), unless --wd or --config says otherwise.

Examples:

  hptransfer diagnose --model llama --out diag/

  hptransfer diagnose --model llama --rule sqrt,linear --out diag/

  hptransfer diagnose --model mymodels:make_model --task charlm --widths 128,256,512

  hptransfer diagnose --checkpoints w128.pt,w256.pt,w512.pt --rule mup-wd-linear
"""

SHORT_HELP = "Is it safe to scale up? Compare top singular values across proxy widths (exit 0/1/3)."

_GATES = ("hidden", "output", "input", "fixed")


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
        typer.Option(
            "--widths",
            "-w",
            help=f"Comma-separated proxy widths (default {DEFAULT_WIDTHS} when training; with "
            "--checkpoints: one per file, checked against the tensor shapes).",
        ),
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
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            "-n",
            help="Training steps per width (default: 4 AdamW timescales at the slowest width). "
            "With --checkpoints and --config: the steps they were trained for, to count the "
            "timescales they cover.",
        ),
    ] = None,
    wd: Annotated[
        float | None,
        typer.Option(
            "--wd",
            help="Base weight decay (torch AdamW weight_decay at the base width; tau = 1/(lr·wd)). "
            f"Default: the config's; {BUILTIN_DIAGNOSE_WD:g} for the built-in proxies.",
        ),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            help="torch threads per run (default 1: small proxies run faster on one thread, "
            "and a shared machine much faster).",
        ),
    ] = 1,
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
        typer.Option("--alpha-tol", help="Slope tolerance: invariant when the CI of alpha is within ±this."),
    ] = 0.1,
    coord: Annotated[
        bool, typer.Option("--coord/--no-coord", help="Also run the muP coordinate check.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    gates = tuple(g.strip() for g in gate.split(",") if g.strip())
    bad = [g for g in gates if g not in _GATES]
    if bad or not gates:
        fail(f"--gate: unknown class {bad[0] if bad else gate!r}; use hidden, output, input or fixed")
    if steps is not None and steps < 1:
        fail(f"--steps must be >= 1, got {steps}")
    if batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    if threads < 1:
        fail(f"--threads must be >= 1, got {threads}")
    if not alpha_tol >= 0:
        fail(f"--alpha-tol must be >= 0, got {alpha_tol}")
    if wd is not None and not wd >= 0:
        fail(f"--wd must be >= 0, got {wd}")
    width_list = None if widths is None else parse_ints(widths, "--widths")
    ckpt_list = None if checkpoints is None else [c.strip() for c in checkpoints.split(",") if c.strip()]
    if ckpt_list is not None and not ckpt_list:
        fail("--checkpoints: give comma-separated files, e.g. w128.pt,w256.pt")
    rules: list[str | None] = [r.strip() for r in rule.split(",") if r.strip()] if rule else [None]
    if ckpt_list is not None and len(rules) > 1:
        fail("--checkpoints takes one --rule: the rule the checkpoints were trained with")
    check_out_dir(out)  # before training: a bad folder must not cost the whole run

    # torch and the diagnostics load here, not at CLI start-up
    import torch

    from hptransfer.diagnostics.api import (
        calibrate_classes_from_reports,
        calibrate_from_reports,
        diagnose,
        diagnose_checkpoints,
        resolve_model,
    )
    from hptransfer.diagnostics.fit import Thresholds
    from hptransfer.diagnostics.report import (
        DiagnosticError,
        SpectralReport,
        disagreements,
        recommended_exponents,
    )
    from hptransfer.scaling import ConfigError, load_config

    torch.set_num_threads(threads)
    thresholds = Thresholds(alpha_tol=alpha_tol)
    reports: dict[str, SpectralReport] = {}
    try:
        cfg = load_config(config) if config is not None else None
        if wd is not None and cfg is not None:
            cfg = replace(cfg, weight_decay=wd)
        if ckpt_list is not None:
            report = diagnose_checkpoints(
                ckpt_list,
                widths=width_list,
                rule=rules[0],
                thresholds=thresholds,
                gate=gates,
                steps=steps,
                config=cfg,
            )
            reports[report.rule or "checkpoints"] = report
        else:
            base = resolve_model(model, task=task, config=cfg).config
            if wd is not None:
                base = replace(base, weight_decay=wd)
            elif cfg is None and ":" not in model:
                base = replace(base, weight_decay=BUILTIN_DIAGNOSE_WD)
            if wd_exponent is not None:
                if rules not in ([None], ["custom"]):
                    fail("--wd-exponent sets its own rule (muP, wd ∝ width^E); drop --rule")
                base, rules = base.with_rule("custom", wd_exponent=wd_exponent), [None]
            from hptransfer.diagnostics.api import default_steps

            ws = width_list or parse_ints(DEFAULT_WIDTHS, "--widths")
            for one in rules:
                n_steps = steps or default_steps(base, one, ws)
                with _progress(one, n_steps, plain=as_json or not err_console.is_terminal) as progress:
                    rep = diagnose(
                        model,
                        ws,
                        base,
                        one,
                        n_steps,
                        task=task,
                        batch_size=batch_size,
                        seed=seed,
                        thresholds=thresholds,
                        gate=gates,
                        coord=coord,
                        progress=progress,
                    )
                reports[rep.rule or str(one)] = rep
    except (ConfigError, DiagnosticError) as exc:
        fail(str(exc))
    except ValueError as exc:  # e.g. a factory whose parameters do not change with width
        fail(str(exc))
    except KeyboardInterrupt:  # was exit 130 in silence
        fail(f"interrupted; a partial diagnosis is not kept (nothing written); again: {command_line()}", 130)
    report = next(iter(reports.values()))  # the first rule decides the exit code
    two = calibrate_from_reports(reports) if len(reports) > 1 else None
    two_classes = calibrate_classes_from_reports(reports) if len(reports) > 1 else {}

    written: list[Path] = []
    try:
        if out is not None and len(reports) == 1:
            written = _write_outputs(report, out)
        elif out is not None:
            from hptransfer.diagnostics.plots import plot_rules

            for name, rep in reports.items():
                written += _write_outputs(rep, out / name)
            written += plot_rules(reports, out / "spectral_rules")
    except OSError as exc:  # the disk filled up during the run
        # exit 2, not 1: 1 means drift to a CI gate
        fail(f"cannot write the report to {out} ({disk_error(exc) or exc.strerror or exc})", 2)
    if as_json:
        if len(reports) == 1:
            sys.stdout.write(report.to_json() + "\n")
        else:
            data = {
                "outcome": report.outcome,
                "exit_code": report.exit_code,
                "rules": {n: r.to_dict() for n, r in reports.items()},
                "exit_rule": next(iter(reports)),
                "two_run_calibration": None
                if two is None
                else {
                    "wd_exponent": two[0].exponent,
                    "ci": None if two[0].ci is None else list(two[0].ci),
                    "from_rules": list(two[1]),
                    "recommended": two[0].too_wide() is None,
                    "not_recommended_because": two[0].too_wide(),
                },
                "two_run_class_calibration": {
                    comp: {
                        "wd_exponent": cal.exponent,
                        "ci": None if cal.ci is None else list(cal.ci),
                        "from_rules": list(pair),
                        "recommended": cal.too_wide() is None,
                        "not_recommended_because": cal.too_wide(),
                    }
                    for comp, (cal, pair) in two_classes.items()
                },
                "two_run_class_disagreements": [
                    list(p) for p in disagreements({c: cal for c, (cal, _) in two_classes.items()})
                ],
                "two_run_wd_exponents": recommended_exponents({c: cal for c, (cal, _) in two_classes.items()})
                or None,
            }
            sys.stdout.write(json.dumps(data, indent=2, default=lambda x: None) + "\n")
    else:
        _print_report(report, reports, two, written, two_classes)
    raise typer.Exit(report.exit_code)


def _print_report(
    report: Any, reports: dict[str, Any], two: Any, written: list[Path], two_classes: dict[str, Any]
) -> None:
    from rich.console import Console

    from hptransfer.diagnostics.report import render

    out = console
    if not out.is_terminal and out.width < 150:
        out = Console(width=150)  # piped output: room for one column per width
    out.print(render(report))
    for problem in report.problems:
        out.print(f"[yellow]warning:[/] {problem}", highlight=False)
    if report.coord is not None:
        bad_coord = report.coord.unstable()
        out.print(
            "coordinate check: "
            + (
                f"[yellow]activation scale moves with width in {', '.join(bad_coord[:6])}[/]"
                if bad_coord
                else "[green]activation scales flat in width[/]"
            )
            + f" (|slope| tolerance {report.coord.tolerance:g})"
        )
    if len(reports) > 1:
        out.print(_rules_table(reports, two, two_classes))
    if written:
        out.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
    for line in report.missing_evidence():
        out.print(f"[yellow]to make it conclusive:[/] {line}", highlight=False)
    colour = {"safe": "green", "drift": "red", "inconclusive": "yellow"}[report.outcome]
    prefix = f"{report.rule}: " if len(reports) > 1 else ""
    out.print(f"[bold {colour}]{prefix}{report.summary()}[/] (exit {report.exit_code})", highlight=False)


def _rules_table(reports: dict[str, Any], two: Any, two_classes: dict[str, Any]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title="rules compared (the first one decides the exit code)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns = ["rule", "outcome", "hidden σmax ratio", "pooled alpha [CI]", "drifting", "one-run e*"]
    columns.append("val loss")
    for col in columns:
        table.add_column(col, justify="left" if col in ("rule", "outcome") else "right")
    for name, rep in reports.items():
        p, cal = rep.pooled, rep.calibration
        ci = "" if p is None or p.ci is None else f" [{p.ci[0]:+.2f},{p.ci[1]:+.2f}]"
        widest = max(rep.val_loss) if rep.val_loss else None
        table.add_row(
            name,
            rep.outcome,
            "-" if p is None else f"{p.ratio:.3g}",
            "-" if p is None else f"{p.alpha:+.2f}{ci}",
            f"{len(rep.drifting)}/{len(rep.gated())}",
            "-" if cal is None else f"{cal.exponent:.2f}",
            "-" if widest is None else f"{rep.val_loss[widest]:.4g} @ {widest}",
        )
    if two is not None:
        cal, (a, b) = two
        band = "" if cal.ci is None else f" [{cal.ci[0]:.2f}, {cal.ci[1]:.2f}]"
        text = (
            f"two-run calibration ({a} & {b}): sigma_max is width-invariant at "
            f"wd ∝ width^{cal.exponent:.2f}{band} (muP lr ∝ 1/width); "
        )
        why = cal.too_wide()
        if why is None:
            text += f"try --rule custom --wd-exponent {cal.exponent:.2f} in `hptransfer suggest`."
        else:
            text += f"no --wd-exponent recommendation: {why}."
        table.caption = text + _two_run_class_text(two_classes)
        table.caption_justify = "left"
    elif two_classes:
        table.caption = _two_run_class_text(two_classes).lstrip("\n")
        table.caption_justify = "left"
    return table


def _two_run_class_text(two_classes: dict[str, Any]) -> str:
    """Per-component two-run exponents; the config's form when their intervals part."""
    from rich.markup import escape

    from hptransfer.diagnostics.report import split_advice

    if not two_classes:
        return ""
    parts = []
    for comp, (cal, _pair) in two_classes.items():
        band = "interval undefined" if cal.ci is None else f"[{cal.ci[0]:.2f}, {cal.ci[1]:.2f}]"
        parts.append(f"{comp} {cal.exponent:.2f} {band}")
    text = "\nper class (two-run): " + "; ".join(parts) + "."
    advice = split_advice({c: cal for c, (cal, _) in two_classes.items()})
    if advice:
        text += "\n" + advice
    return escape(text)


class _progress:
    """``progress(width, step, steps)`` for :func:`diagnose`: a rich bar on a terminal, else
    plain lines on stderr (about every tenth of a width's run)."""

    def __init__(self, rule: str | None, steps: int, *, plain: bool) -> None:
        self.rule, self.steps, self.plain = rule or "config rule", steps, plain
        self.bar: Any = None
        self.tasks: dict[int, Any] = {}
        self.t0 = time.perf_counter()
        self.last: dict[int, int] = {}

    def __enter__(self) -> _progress:
        if not self.plain:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn(f"[bold]{self.rule} · width {{task.fields[width]}}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, width: int, step: int, total: int) -> None:
        if self.bar is not None:
            if width not in self.tasks:
                self.tasks[width] = self.bar.add_task("train", total=total, width=width)
            self.bar.update(self.tasks[width], completed=step, total=total)
            return
        last = self.last.get(width, -1)
        if step == total or last < 0 or step - last >= max(1, total // 10):
            if step == last:
                return
            self.last[width] = step
            sys.stderr.write(
                f"diagnose: rule {self.rule} · width {width}: step {step}/{total} "
                f"({time.perf_counter() - self.t0:.0f} s)\n"
            )
            sys.stderr.flush()


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
