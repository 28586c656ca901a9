"""The ``hptransfer`` command line (typer).

Every command is a thin shell over a Python function, defined at module level in its own
module (``cli/suggest.py``, ``cli/sweep.py``, ``cli/tune.py``, ``cli/diagnose.py``,
``cli/stn.py``) and added to :data:`app` here; shared helpers live in :mod:`hptransfer.cli.common`.
Keep torch out of module-level imports everywhere under ``cli/``: ``hptransfer suggest`` must
start without importing it. The console script is :func:`hptransfer.cli.entry.main`, which runs
plain ``suggest`` command lines without importing typer at all.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Annotated, Optional

import typer

from hptransfer import __version__
from hptransfer.cli import diagnose, stn, sweep, tune
from hptransfer.cli.common import console
from hptransfer.cli.safety import OneLineUsageErrors
from hptransfer.cli.suggest import run_suggest

__all__ = ["app", "main", "suggest_cmd"]

app = typer.Typer(
    name="hptransfer",
    help=(
        "Tune hyperparameters on a narrow proxy, carry them to a wide model.\n\n"
        "Example: hptransfer suggest --width 4096"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=OneLineUsageErrors,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"hptransfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],  # noqa: UP045 (typer needs Optional on 3.10)
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    """Tune hyperparameters on a narrow proxy, carry them to a wide model."""


# The options below are mirrored by the typer-free fast path (hptransfer.cli.suggest._OPTIONS);
# tests/test_cli_suggest.py checks that both read every command line alike.
@app.command("suggest")
def suggest_cmd(
    width: Annotated[str, typer.Option("--width", "-w", help="Target width (model dimension).")],
    depth: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--depth", help="Target depth (residual blocks); needs base_depth in the config."),
    ] = None,
    depth_rule: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--depth-rule", help="none | depth-mup (alpha 1/2) | completep (alpha 1)."),
    ] = None,
    optimizer: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--optimizer", help="adamw | adam | sgd | muon (Muon matrices, AdamW rest)."),
    ] = None,
    tokens: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--tokens", help="Training tokens of the target run (2e9, 500M); wd keeps tau/run."),
    ] = None,
    batch: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--batch", help="Tokens per optimizer step of the target run (1M = 1e6)."),
    ] = None,
    config: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--config", "-c", help="Proxy config (TOML or JSON). Default: embedded."),
    ] = None,
    rule: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--rule",
            "-r",
            help="sp | mup | mup-wd-linear (linear) | mup-wd-sqrt (sqrt) | mup-wd-constant | custom",
        ),
    ] = None,
    wd_exponent: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--wd-exponent", help="Custom wd width exponent e (wd ∝ width^e)."),
    ] = None,
    readout: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--readout", help="lr (readout lr/m) or multiplier (mup-style output/m)."),
    ] = None,
    study: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--study", help="Optuna storage URL of a proxy study: carry its best trial."),
    ] = None,
    study_name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--study-name", help="Study in that storage (optional if it holds one)."),
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", help="With --study: median of the k best trials.", min=1)
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    wd_exponents: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--wd-exponents",
            help="Per-class wd width exponents, e.g. attention=0.8,mlp=1.0,output=1.0 (AdamW's e).",
        ),
    ] = None,
    scale_eps: Annotated[
        bool, typer.Option("--scale-eps", help="Scale Adam epsilon per class with width and depth.")
    ] = False,
) -> None:
    """Per-class lr, weight decay, eps, init std and multipliers at a target width, depth,
    optimizer and run length.

    Example: hptransfer suggest --width 4096 --depth 48 --optimizer muon --tokens 2e9 --batch 1M
    """
    run_suggest(
        width,
        config,
        rule,
        wd_exponent,
        readout,
        study,
        study_name,
        top_k,
        as_json,
        depth=depth,
        depth_rule=depth_rule,
        optimizer=optimizer,
        tokens=tokens,
        batch=batch,
        scale_eps=scale_eps,
        wd_exponents=wd_exponents,
    )


def _add(name: str, module: ModuleType) -> None:
    """Add ``module``'s command ``<name>_cmd`` (help: ``module.HELP``/``SHORT_HELP`` if set, else
    its docstring; ``module.EPILOG`` after the options)."""
    command = getattr(module, f"{name}_cmd")
    app.command(
        name,
        help=getattr(module, "HELP", None),
        short_help=getattr(module, "SHORT_HELP", None),
        epilog=getattr(module, "EPILOG", None),
    )(command)


_add("diagnose", diagnose)
_add("sweep", sweep)
_add("tune", tune)
_add("stn", stn)


def main() -> None:
    """Run the typer app (the console script goes through :func:`hptransfer.cli.entry.main`)."""
    from hptransfer.cli.entry import main as entry_main

    entry_main()


if __name__ == "__main__":  # pragma: no cover
    main()
