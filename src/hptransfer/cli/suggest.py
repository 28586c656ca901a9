"""``hptransfer suggest``: the per-class table at a target width, and its fast path.

This module imports neither typer nor torch. :func:`run_suggest` does the work for both ways in:
the typer command in :mod:`hptransfer.cli.main`, and :func:`fast_suggest`, which the console
script (:func:`hptransfer.cli.entry.main`) tries first so that ``hptransfer suggest`` starts
without typer and the pydantic it imports (``benchmarks/cold_start.py`` measures it against
``python -c "import rich"``). :func:`fast_suggest` reads only command lines it
understands exactly as typer would; anything else (``--help``, an unknown or malformed option)
returns ``False`` and typer handles it, so help and usage errors are typer's own.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hptransfer.scaling import (
    DEPTH_RULES,
    OPTIMIZERS,
    READOUT_STYLES,
    WD_EXPONENTS,
    ConfigError,
    GroupHyper,
    Plan,
    ProxyConfig,
    check_depth,
    check_width,
    default_config,
    get_depth_rule,
    load_config,
    parse_count,
    suggest,
)
from hptransfer.scaling.config import WD_EXPONENT_KEYS

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["emit_plans", "fast_suggest", "render_plans", "run_suggest"]


def fail(message: str, code: int = 2) -> NoReturn:
    """:func:`hptransfer.cli.common.fail`, imported when it is needed: ``suggest --json`` loads
    no rich at all (its console costs more start-up than the rest of the command)."""
    from hptransfer.cli import common

    common.fail(message, code)


_EXAMPLES = {
    "vector": "embeddings, biases, norm gains",
    "hidden": "attention & MLP matrices",
    "output": "readout / unembedding",
}

# kind rows shown under their class when they differ from it: (variant key, label)
_KIND_ROWS = {
    "vector": (("vector.block", "  blocks"),),
    "hidden": (("hidden.attention", "  attention"), ("hidden.mlp", "  mlp")),
    "output": (),
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


def _fmt_fraction(plan: Plan, group: GroupHyper) -> str:
    fraction = plan.tau_fraction(group.param_class, group.kind)
    if fraction is None:
        return "-"
    return "∞" if math.isinf(fraction) else f"{fraction:.2g}"


def _differs(a: GroupHyper, b: GroupHyper) -> bool:
    keys = ("lr", "weight_decay", "eps", "init_std", "multiplier")
    return any(getattr(a, k) != getattr(b, k) for k in keys)


def _fmt_init(group: GroupHyper) -> str:
    """The init std to draw with (explicit std × tuned scale), or ``own`` (×scale) when the
    model's own init is kept."""
    if group.init_std is None:
        return "own" if group.init_scale == 1 else f"own×{_fmt(group.init_scale)}"
    return _fmt(group.init_std * group.init_scale)


_WD_NOTES = {
    "adamw": "wd = torch.optim.AdamW weight_decay (each step decays p by lr·wd); "
    "tau = 1/(lr·wd) steps, the AdamW timescale.",
    "adam": "wd = torch.optim.Adam weight_decay (coupled L2: wd·p added to the gradient); "
    "tau = 1/(lr·wd) steps.",
    "sgd": "wd = torch.optim.SGD weight_decay (coupled L2: each step decays p by lr·wd); "
    "tau = 1/(lr·wd) steps.",
    "muon": "wd = torch.optim.Muon / AdamW weight_decay (each step decays p by lr·wd, Muon with its "
    "lr before the shape adjustment); tau = 1/(lr·wd) steps.",
}


def render_plans(
    plans: Sequence[Plan],
    config: ProxyConfig,
    source: str,
    proxy_width: int | None = None,
    tied: bool | None = None,
) -> Table:
    """A rich table: one row per parameter class; weight decay shown for every plan given.

    ``proxy_width``: the width a study's trials trained at (the alternatives were carried from it).
    ``tied``: whether the model ties its embedding and readout (None: unknown, the note is shown).
    """
    from rich import box  # here, not at import: `suggest --json` draws no table
    from rich.table import Table

    main = plans[0]
    title = (
        f"[bold]{config.name}[/] ({source}) · base width {main.base_width} → width "
        f"[bold]{main.width}[/] (m = {main.width_mult:g}) · rule [bold]{main.rule.name}[/]"
    )
    if main.depth is not None and main.base_depth is not None:
        title += (
            f" · depth {main.base_depth} → [bold]{main.depth}[/] (m_L = {main.depth_mult:g}, "
            f"{main.depth_rule})"
        )
    if main.optimizer != "adamw":
        title += f" · optimizer [bold]{main.optimizer}[/]"
    if main.iterations is not None and main.base_iterations is not None and main.length_mult != 1:
        title += f" · {_fmt_steps(main.base_iterations)} → [bold]{_fmt_steps(main.iterations)}[/] steps"
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    table.add_column("class", style="bold", no_wrap=True)
    show_eps = main.scale_eps
    for header in ("lr", "init", "mult", *(("eps",) if show_eps else ())):
        table.add_column(header, justify="right", no_wrap=True)
    show_fraction = main.iterations is not None
    for plan in plans:
        label = plan.rule.name.removeprefix("mup-wd-") if len(plans) > 1 else ""
        suffix = f"\n{label}" if label else ""
        table.add_column(f"wd{suffix}", justify="right", style="cyan", no_wrap=True)
        tau_header = "tau (/run)" if show_fraction else "tau"
        table.add_column(f"{tau_header}{suffix}", justify="right", style="cyan", no_wrap=True)

    def row(label: str, pick: Callable[[Plan], GroupHyper]) -> list[str]:
        group = pick(main)
        cells = [label, _fmt(group.lr), _fmt_init(group), _fmt(group.multiplier)]
        if show_eps:
            cells.append(_fmt(group.eps))
        for plan in plans:
            g = pick(plan)
            tau = _fmt_steps(g.tau)
            if show_fraction and not math.isinf(g.tau):
                tau += f" ({_fmt_fraction(plan, g)})"
            cells += [_fmt(g.weight_decay), tau]
        return cells

    for cls in main.groups:
        table.add_row(*row(str(cls), lambda p, c=cls: p.groups[c]))  # type: ignore[misc]
        for key, label in _KIND_ROWS.get(str(cls), ()):
            if any(_differs(p.variants[key], p.groups[cls]) for p in plans if key in p.variants):
                table.add_row(*row(label, lambda p, k=key: p.variants[k]))  # type: ignore[misc]
    notes = [
        "; ".join(f"{c}: {e}" for c, e in _EXAMPLES.items()) + ".",
        _WD_NOTES.get(main.optimizer, _WD_NOTES["adamw"]),
    ]
    if main.optimizer == "muon":
        notes.append(
            f"muon: torch.optim.Muon(adjust_lr_fn={main.muon_adjust_lr_fn!r}) for hidden matrices "
            "(its lr is set by the spectral condition: "
            + ("constant in width" if main.muon_adjust_lr_fn == "original" else "∝ width^-1/2")
            + "), AdamW for the rest."
        )
    if main.depth is not None and main.base_depth is not None:
        # the plan's own depth factor of block lrs (Adam: m_L^(alpha-1); SGD: m_L^(2 alpha-1))
        block_lr = main.group_for("vector", "block").lr / main["vector"].lr
        exponent = math.log(block_lr) / math.log(main.depth_mult) if main.depth_mult != 1 else 0.0
        notes.append(
            f"depth {main.depth} ({main.depth_rule}, alpha {main.depth_alpha:g}): every residual branch × "
            f"{_fmt(main.residual_multiplier)} (x + r·f(x)); block matrices and block norm gains/biases "
            f"lr × m_L^{exponent:.3g} = {_fmt(block_lr)} ({main.optimizer})."
        )
    if main.iterations is not None and main.base_iterations is not None:
        run = (
            f"run: {_fmt(main.tokens)} tokens in steps of {_fmt(main.batch_tokens)} = "
            f"{_fmt_steps(main.iterations)} steps (proxy {_fmt_steps(main.base_iterations)})"
        )
        if main.length_mult != 1:
            if main.wd_length_exponent == 1:
                why = (
                    "keeps tau the same fraction of the run (AdamW timescale rule, Wang & Aitchison "
                    "arXiv 2405.13698)"
                )
            else:
                why = f"= (proxy steps / steps)^{main.wd_length_exponent:g} (wd_length_exponent)"
            run += f"; wd × {_fmt(main.wd_length_factor)} {why}; lr unchanged"
        notes.append(run + ". tau (/run): the timescale in steps (and as a fraction of the run).")
    eps_values = {g.eps for p in plans for g in (*p.groups.values(), *p.variants.values())}
    if not show_eps:
        notes.append(f"Adam eps {_fmt(next(iter(eps_values)))} for every class (scale_eps off).")
    if any(g.init_std is None for g in main.groups.values()):
        notes.append(
            "init own: the model's own init is kept (parametrize corrects it for width where the "
            "rule needs it); ×s: the tuned init scale multiplies it."
        )
    if main.rule.is_mup and tied is not False:
        notes.append(
            "tied embedding/readout: the shared weight trains as vector; readout output × "
            f"{_fmt(main.tied_output_multiplier)}."
        )
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
        if proxy_width is not None:
            notes.append(
                f"the other rule's wd is carried from the proxy width {proxy_width}, from the weight "
                "decay the trials trained with."
            )
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table


def emit_plans(
    plans: Sequence[Plan], cfg: ProxyConfig, source: str, as_json: bool, proxy_width: int | None = None
) -> None:
    """Print ``plans`` (the first is the answer, the rest alternatives) as a table or JSON;
    ``proxy_width``: the width a study's trials trained at, when the plans come from one."""
    if as_json:
        import json

        out: dict[str, Any] = plans[0].to_dict()
        out["config"] = cfg.to_dict()
        if len(plans) > 1:
            out["alternatives"] = [p.to_dict() for p in plans[1:]]
        if proxy_width is not None:
            out["proxy_width"] = proxy_width
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        from hptransfer.cli.common import console

        console.print(render_plans(plans, cfg, source, proxy_width))


def _side_by_side(config: ProxyConfig) -> list[str]:
    """The other of the two wd presets, when the config's rule is one of them."""
    rule = config.scaling_rule()
    names = {WD_EXPONENTS["linear"]: "mup-wd-linear", WD_EXPONENTS["sqrt"]: "mup-wd-sqrt"}
    if not rule.is_mup or rule.wd_exponent not in names:
        return []
    return [n for e, n in names.items() if e != rule.wd_exponent]


def run_suggest(
    width: str,
    config: Path | None = None,
    rule: str | None = None,
    wd_exponent: float | None = None,
    readout: str | None = None,
    study: str | None = None,
    study_name: str | None = None,
    top_k: int = 1,
    as_json: bool = False,
    depth: str | None = None,
    depth_rule: str | None = None,
    optimizer: str | None = None,
    tokens: str | None = None,
    batch: str | None = None,
    scale_eps: bool = False,
    wd_exponents: str | None = None,
) -> None:
    """What ``hptransfer suggest`` does once its options are parsed (bad input: :func:`fail`)."""
    # an option's bad value is named by its flag, not by the config key it overrides
    for flag, value, allowed in (
        ("--readout", readout, list(READOUT_STYLES)),
        ("--optimizer", optimizer, list(OPTIMIZERS)),
    ):
        if value is not None and value not in allowed:
            fail(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
    if depth_rule is not None:
        try:
            get_depth_rule(depth_rule)  # takes aliases (complete-p, sp, ...) and any case
        except ValueError:
            fail(f"--depth-rule must be one of {', '.join(DEPTH_RULES)}; got {depth_rule!r}")
    proxy_width: int | None = None
    try:
        if study is not None:
            if config is not None:
                fail("give --config or --study, not both")
            from hptransfer.tuning.storage import mask_url
            from hptransfer.tuning.study import load_study, study_proxy_width
            from hptransfer.tuning.transfer import best_config

            found = load_study(study, study_name)
            cfg = best_config(found, top_k)
            proxy_width = study_proxy_width(found)
            source = f"best of study {study_name or ''} at {mask_url(study)}".replace("  ", " ")
        elif study_name is not None:
            fail("--study-name needs --study URL")
        else:
            cfg = default_config() if config is None else load_config(config)
            source = "embedded default" if config is None else str(config)
        chosen = rule is not None or wd_exponent is not None
        if chosen or readout is not None:
            cfg = replace(
                cfg,
                rule=rule if rule is not None else ("custom" if wd_exponent is not None else cfg.rule),
                wd_exponent=wd_exponent if chosen else cfg.wd_exponent,
                readout=readout if readout is not None else cfg.readout,
            )
        if optimizer is not None or depth_rule is not None or scale_eps or wd_exponents is not None:
            cfg = replace(
                cfg,
                optimizer=optimizer if optimizer is not None else cfg.optimizer,
                depth_rule=depth_rule if depth_rule is not None else cfg.depth_rule,
                scale_eps=scale_eps or cfg.scale_eps,
                wd_exponents=(
                    cfg.wd_exponents if wd_exponents is None else {**cfg.wd_exponents, **_pairs(wd_exponents)}
                ),
            )
        target = check_width(cfg, width)  # the option's text, checked: a positive int that fits
        extra: dict[str, Any] = {
            "depth": check_depth(cfg, depth),
            "tokens": None if tokens is None else parse_count(tokens, "--tokens"),
            "batch_tokens": None if batch is None else parse_count(batch, "--batch"),
        }
        plans = [suggest(cfg, target, **extra)]
        if not chosen:
            plans += [_alternative(cfg, target, other, proxy_width, extra) for other in _side_by_side(cfg)]
    except ConfigError as exc:
        fail(str(exc))
    emit_plans(plans, cfg, source, as_json, proxy_width)


def _pairs(text: str) -> dict[str, float]:
    """``"attention=0.8, mlp=1"`` -> ``{"attention": 0.8, "mlp": 1.0}`` (ConfigError otherwise)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        try:
            if not eq:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"--wd-exponents: {part.strip()!r} is not class=number; give e.g. attention=0.8,mlp=1.0"
            ) from None
        if key.strip() not in WD_EXPONENT_KEYS:
            raise ConfigError(
                f"--wd-exponents: unknown class {key.strip()!r}; allowed: {', '.join(WD_EXPONENT_KEYS)}"
            )
    return out


def _alternative(
    cfg: ProxyConfig, width: int, rule: str, proxy_width: int | None, extra: dict[str, Any]
) -> Plan:
    """``cfg`` carried to ``width`` under the other wd ``rule``; for a study, from the proxy width
    (the weight decay the proxy trained with), not from the base width it was expressed at."""
    if proxy_width is None:
        return suggest(cfg, width, rule, **extra)
    from hptransfer.tuning.transfer import rebase_weight_decay

    return suggest(rebase_weight_decay(cfg, proxy_width, rule), width, rule, **extra)


# -- the fast path: the console script reads `suggest` without typer -----------------------------
# option -> (parameter, kind); kind: str, path, float, int (>= 1) or flag. Mirrors the typer
# command in hptransfer.cli.main (tests/test_cli_suggest.py checks the two agree).
_OPTIONS: dict[str, tuple[str, str]] = {
    "--width": ("width", "str"),
    "-w": ("width", "str"),
    "--config": ("config", "path"),
    "-c": ("config", "path"),
    "--rule": ("rule", "str"),
    "-r": ("rule", "str"),
    "--wd-exponent": ("wd_exponent", "float"),
    "--readout": ("readout", "str"),
    "--study": ("study", "str"),
    "--study-name": ("study_name", "str"),
    "--top-k": ("top_k", "int"),
    "--json": ("as_json", "flag"),
    "--depth": ("depth", "str"),
    "--depth-rule": ("depth_rule", "str"),
    "--optimizer": ("optimizer", "str"),
    "--tokens": ("tokens", "str"),
    "--batch": ("batch", "str"),
    "--scale-eps": ("scale_eps", "flag"),
    "--wd-exponents": ("wd_exponents", "str"),
}


def parse_suggest_args(args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`run_suggest` for ``args`` (what follows ``suggest``), or
    ``None`` when typer should read them (help, unknown or malformed options, no ``--width``).

    >>> parse_suggest_args(["-w", "4096", "--rule=sqrt", "--json"])
    {'width': '4096', 'rule': 'sqrt', 'as_json': True}
    >>> parse_suggest_args(["--width", "4096", "--help"]) is None
    True
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, attached = token.partition("=") if token.startswith("--") else (token, "", "")
        if name not in _OPTIONS:
            return None
        param, kind = _OPTIONS[name]
        if kind == "flag":
            if eq:
                return None
            out[param] = True
            i += 1
            continue
        if eq:
            text = attached
        elif i + 1 < len(args):
            text = args[i + 1]
            i += 1
        else:
            return None
        i += 1
        try:
            if kind == "float":
                out[param] = float(text)
            elif kind == "int":
                out[param] = int(text)
                if out[param] < 1:
                    return None
            elif kind == "path":
                out[param] = Path(text)
            else:
                out[param] = text
        except ValueError:
            return None
    return out if "width" in out else None


def fast_suggest(args: Sequence[str]) -> bool:
    """Run ``hptransfer suggest ARGS`` without typer when the arguments are plain; ``False``
    (nothing done) when typer should handle them."""
    kwargs = parse_suggest_args(args)
    if kwargs is None:
        return False
    run_suggest(**kwargs)
    return True
