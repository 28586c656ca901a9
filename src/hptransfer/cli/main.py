"""The ``hptransfer`` command line.

Every command is a thin shell over a Python function. Keep torch out of module-level imports
here and in the command modules: ``hptransfer suggest`` must start without importing it.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.table import Table

from hptransfer import __version__
from hptransfer.cli.common import console, err_console, fail, parse_ints  # noqa: F401 (re-exported)
from hptransfer.scaling import (
    WD_EXPONENTS,
    ConfigError,
    Plan,
    ProxyConfig,
    default_config,
    load_config,
    suggest,
)

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
)

# Command modules that register themselves on `app` (each defines `register(app)`).
COMMAND_MODULES = ("diagnose", "sweep", "tune", "stn")


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


def resolve_config(config_path: Path | None) -> ProxyConfig:
    """The ``--config`` file, or the embedded default proxy."""
    return default_config() if config_path is None else load_config(config_path)


_EXAMPLES = {
    "vector": "embeddings, biases, norm gains",
    "hidden": "attention & MLP matrices",
    "output": "readout / unembedding",
}


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "∞"
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e5:
        mantissa, exp = f"{x:.2e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{x:.3g}"


def _fmt_steps(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.0f}"


def render_plans(plans: list[Plan], config: ProxyConfig, source: str) -> Table:
    """A rich table: one row per parameter class; weight decay shown for every plan given."""
    main = plans[0]
    table = Table(
        title=(
            f"[bold]{config.name}[/] ({source}) · base width {main.base_width} → width "
            f"[bold]{main.width}[/] (m = {main.width_mult:g}) · rule [bold]{main.rule.name}[/]"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("class", style="bold", no_wrap=True)
    for header in ("lr", "init std", "mult"):
        table.add_column(header, justify="right", no_wrap=True)
    for plan in plans:
        label = plan.rule.name.removeprefix("mup-wd-") if len(plans) > 1 else ""
        suffix = f"\n{label}" if label else ""
        table.add_column(f"wd{suffix}", justify="right", style="cyan", no_wrap=True)
        table.add_column(f"tau{suffix}", justify="right", style="cyan", no_wrap=True)
    for cls, group in main.groups.items():
        row = [str(cls), _fmt(group.lr), _fmt(group.init_std), _fmt(group.multiplier)]
        for plan in plans:
            g = plan.groups[cls]
            row += [_fmt(g.weight_decay), _fmt_steps(g.tau)]
        table.add_row(*row)
    notes = [
        "; ".join(f"{c}: {e}" for c, e in _EXAMPLES.items()) + ".",
        "wd = torch.optim.AdamW weight_decay (each step decays p by lr·wd); "
        "tau = 1/(lr·wd) steps, the AdamW timescale.",
    ]
    if main.n_heads is not None:
        kind = "muP, ∝ 1/d_head" if main.rule.is_mup else "SP, ∝ 1/sqrt(d_head)"
        notes.append(
            f"attention: {main.n_heads} heads × {main.head_dim}, "
            f"logit scale {_fmt(main.attention_scale)} ({kind})."
        )
    if len(plans) > 1:
        notes.append(
            "wd width rule: linear = wd ∝ width (tau constant; mup's MuAdamW; default), "
            "sqrt = wd ∝ sqrt(width) (Fan et al., arXiv 2510.15262). "
            "`hptransfer diagnose` measures which holds for your model; `--rule` picks one."
        )
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table


def _side_by_side(config: ProxyConfig) -> list[str]:
    """The config's rule, then the other of the two wd presets, when the rule is one of them."""
    rule = config.scaling_rule()
    names = {WD_EXPONENTS["linear"]: "mup-wd-linear", WD_EXPONENTS["sqrt"]: "mup-wd-sqrt"}
    if not rule.is_mup or rule.wd_exponent not in names:
        return []
    return [n for e, n in names.items() if e != rule.wd_exponent]


@app.command("suggest")
def suggest_cmd(
    width: Annotated[str, typer.Option("--width", "-w", help="Target width (model dimension).")],
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
) -> None:
    """Per-class lr, weight decay, init std and multipliers at a target width.

    Example: hptransfer suggest --width 4096 --rule sqrt
    """
    try:
        if study is not None:
            if config is not None:
                fail("give --config or --study, not both")
            from hptransfer.tuning.storage import mask_url
            from hptransfer.tuning.transfer import config_from_study

            cfg = config_from_study(study, study_name, top_k=top_k)
            source = f"best of study {study_name or ''} at {mask_url(study)}".replace("  ", " ")
        elif study_name is not None:
            fail("--study-name needs --study URL")
        else:
            cfg = resolve_config(config)
            source = "embedded default" if config is None else str(config)
        chosen = rule is not None or wd_exponent is not None
        if chosen or readout is not None:
            cfg = ProxyConfig(
                **{
                    **cfg.__dict__,
                    "rule": rule if rule is not None else ("custom" if wd_exponent is not None else cfg.rule),
                    "wd_exponent": wd_exponent if chosen else cfg.wd_exponent,
                    "readout": readout if readout is not None else cfg.readout,
                }
            )
        plans = [suggest(cfg, width)]  # type: ignore[arg-type]
        if not chosen:
            plans += [suggest(cfg, width, other) for other in _side_by_side(cfg)]
    except ConfigError as exc:
        fail(str(exc))
    emit_plans(plans, cfg, source, as_json)


def emit_plans(plans: list[Plan], cfg: ProxyConfig, source: str, as_json: bool) -> None:
    if as_json:
        out: dict[str, Any] = plans[0].to_dict()
        out["config"] = cfg.to_dict()
        if len(plans) > 1:
            out["alternatives"] = [p.to_dict() for p in plans[1:]]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        console.print(render_plans(plans, cfg, source))


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        qualified = f"{__package__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name == qualified:
                continue  # command not built yet
            raise
        module.register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
