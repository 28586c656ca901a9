"""``hptransfer tune``: an Optuna study of base hyperparameters on a narrow proxy.

No torch at import time (``hptransfer suggest`` must start fast); the command imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hptransfer.cli.common import console, err_console, fail, parse_ints, parse_width
from hptransfer.cli.safety import check_out_dir, command_line, disk_error
from hptransfer.cli.suggest import render_plans
from hptransfer.scaling import ConfigError, ProxyConfig, load_config
from hptransfer.tuning.run import DEFAULT_GRACE, DEFAULT_HEARTBEAT, describe_space, load_space
from hptransfer.tuning.space import TUNABLE, default_space

_SHOWN_FAILURES = 3  # causes printed for the first failed trials

EPILOG = (
    "Search space: base hyperparameters at the base width (ProxyConfig fields), by default "
    + describe_space(default_space())
    + " (attn_mult only for a model with attention). --space FILE replaces it (TOML or JSON, "
    "one table per name: low, high, log); --no-tune NAME keeps NAME at the config's value. "
    "Tunable: " + ", ".join(TUNABLE) + ". The space is recorded in the study."
)


def tied_readout(model: str, task: str | None, config: ProxyConfig, width: int) -> bool | None:
    """Whether ``model`` (a built-in name or ``MODULE:FACTORY``) shares a weight between an
    embedding and a readout, as the torch adapter classifies it (``ParamTable.tied()``, from the
    model built on the meta device at ``width`` and twice it); None when it cannot be told."""
    import torch

    from hptransfer.models import build_model
    from hptransfer.scaling import suggest
    from hptransfer.scaling.torch_adapter import classify, meta_model
    from hptransfer.tuning.builtin import resolve_model

    try:
        choice = resolve_model(model, task=task, config=config)

        def factory(w: int) -> torch.nn.Module:
            if choice.factory is not None:
                built: torch.nn.Module = choice.factory(w)
                return built
            return build_model(choice.name, w, suggest(config, w))

        table = classify(meta_model(factory, width), meta_model(factory, 2 * width))
    except Exception:  # a user's factory can raise anything; the summary then keeps the note
        return None
    return bool(table.tied())


def tune_cmd(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Built-in proxy (llama: char-level LM, mlp: regression) or "
            "MODULE:FACTORY with FACTORY(width) -> torch module.",
        ),
    ] = "llama",
    width: Annotated[
        str | None,
        typer.Option("--width", "-w", help="Proxy width the trials train at. Default: the base width."),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            "-n",
            help="Trials to ADD to the study (its earlier trials stay), default 50. "
            "Or --total-trials to top it up.",
        ),
    ] = None,
    total_trials: Annotated[
        int | None,
        typer.Option(
            "--total-trials",
            help="Top the study up to N finished trials (all workers' count; none run if it has N).",
        ),
    ] = None,
    heartbeat: Annotated[
        int,
        typer.Option(
            "--heartbeat",
            help="Seconds between a running trial's heartbeats (SQLite/PostgreSQL); 0 turns "
            "crash recovery off.",
        ),
    ] = DEFAULT_HEARTBEAT,
    grace: Annotated[
        int,
        typer.Option(
            "--grace",
            help="Seconds without a heartbeat before a worker's trial counts as dead: running "
            "workers mark it failed and retry it once.",
        ),
    ] = DEFAULT_GRACE,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage: sqlite:///FILE.db (default sqlite:///hptransfer.db), "
            "postgresql+psycopg://USER:PW@HOST/DB, journal:///PATH.log.",
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study name. Default: MODEL-wWIDTH."),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel trials in this process.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Training steps per trial.")] = 200,
    force: Annotated[
        bool, typer.Option("--force", help="Add to a study created under another rule or base width.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the figures (optuna_history/optuna_slice .png/.svg)."),
    ] = None,
    target_width: Annotated[
        str | None,
        typer.Option(
            "--target-width", "-t", help="Carry the best trial to this width. Default: 8 × --width."
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Data for a MODULE:FACTORY model: a built-in task (charlm, the default; "
            "regression; classify; …).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Proxy config (TOML/JSON): base width, rule, untuned values."),
    ] = None,
    ladder: Annotated[
        str | None,
        typer.Option(
            "--ladder",
            help="Width as a fidelity: smaller widths tried first, e.g. 32,64; only "
            "the best 1/η of each rung goes on to the next (successive halving).",
        ),
    ] = None,
    eta: Annotated[int, typer.Option("--eta", help="Reduction factor of the ladder.")] = 3,
    eval_every: Annotated[
        int | None,
        typer.Option("--eval-every", help="Report the validation loss every N steps (enables pruning)."),
    ] = None,
    pruner: Annotated[str, typer.Option("--pruner", help="median | hyperband | none.")] = "median",
    seed: Annotated[int, typer.Option("--seed", help="Training seed (init, batches).")] = 0,
    sampler_seed: Annotated[
        int | None,
        typer.Option("--sampler-seed", help="TPE seed (default: random, so parallel workers differ)."),
    ] = None,
    space_file: Annotated[
        Path | None,
        typer.Option("--space", help="Search space file (TOML/JSON): {name: {low, high, log}}."),
    ] = None,
    no_tune: Annotated[
        Optional[list[str]],  # noqa: UP045 (typer needs Optional on 3.10)
        typer.Option("--no-tune", help="Leave a base hyperparameter out of the search (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Tune base hyperparameters on a narrow proxy; print them carried to a target width.

    Example: hptransfer tune --model llama --width 64 --trials 30 --steps 200 --out figs
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hptransfer.tuning.run import TuneInterrupted, tune

    ladder_widths = tuple(parse_ints(ladder or "", "--ladder"))
    proxy_width = parse_width(width, "--width")
    wide = parse_width(target_width, "--target-width")
    if trials is not None and total_trials is not None:
        fail("give --trials N (add N trials) or --total-trials N (top the study up to N), not both")
    check_out_dir(out)
    try:
        import optuna
        import torch

        torch.set_num_threads(1)
        # Optuna's own per-trial warnings (a traceback for Ctrl-C, "failed with value nan") are
        # replaced by the progress line and the first failures' causes below.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        cfg = load_config(config) if config is not None else None
        space = load_space(space_file) if space_file is not None else None
        fixed = [n.strip() for item in no_tune or () for n in item.split(",") if n.strip()]
        progress = Progress(
            TextColumn("[bold]tuning[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
            disable=as_json,
        )  # summary follows
        with progress:
            bar = progress.add_task("", total=trials if total_trials is None else None)

            failures: list[int] = []

            def on_trial(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
                try:
                    best = f"best {st.best_value:.4g} (trial {st.best_trial.number})"
                except ValueError:
                    best = "no finished trial yet"
                progress.update(bar, advance=1, description=f"{trial.state.name.lower():8s} {best}")
                error = trial.user_attrs.get("hptransfer.error")
                if trial.state.name == "FAIL" and error and len(failures) < _SHOWN_FAILURES:
                    failures.append(trial.number)
                    more = (
                        "; later failures: the trials' user attribute hptransfer.error"
                        if len(failures) == _SHOWN_FAILURES
                        else ""
                    )
                    shown = progress.console if not as_json else err_console
                    shown.print(f"trial {trial.number} failed: {error}{more}", highlight=False, markup=False)

            result = tune(
                model,
                proxy_width,
                trials if trials is not None else 50,
                total_trials=total_trials,
                heartbeat=heartbeat or None,
                grace=grace,
                storage=storage,
                study_name=study,
                jobs=jobs,
                steps=steps,
                force=force,
                out=out,
                target_width=wide,
                task=task,
                config=cfg,
                space=space,
                fixed=fixed,
                ladder_widths=ladder_widths,
                reduction_factor=eta,
                eval_every=eval_every,
                pruner=pruner,
                seed=seed,
                sampler_seed=sampler_seed,
                callbacks=[on_trial],
            )
    except TuneInterrupted as stop:
        again = command_line(drop=("trials", "total_trials"), add={"--total-trials": stop.target})
        fail(
            f"interrupted: {stop.finished} finished trials kept in study {stop.study_name}; "
            f"to go on: {again}",
            130,
        )
    except KeyboardInterrupt:  # before the study was open: nothing to keep
        fail("interrupted before any trial ran; run the same command to start again", 130)
    except ConfigError as exc:
        fail(str(exc))
    except ValueError as exc:  # e.g. an unknown task from the training loop
        fail(str(exc))
    except Exception as exc:
        why = disk_error(exc)
        if why is None:
            raise
        fail(f"cannot write ({why}); finished trials stay in the study; free space and rerun", 1)
    st = result.study
    states: dict[str, int] = {}
    for t in st.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    url = storage or "sqlite:///hptransfer.db"
    from hptransfer.tuning.storage import mask_url, normalize_url

    shown = mask_url(normalize_url(url))
    tuned = {k: getattr(result.best, k) for k in st.best_params}
    if as_json:
        out_json = {
            "study": st.study_name,
            "storage": shown,
            "proxy_width": result.proxy_width,
            "best_value": st.best_value,
            "best_trial": st.best_trial.number,
            "base_hyperparameters": tuned,
            "search_space": result.space.to_dict() if result.space is not None else None,
            "trials": states,
            "seconds": result.seconds,
            "figures": [str(p) for p in result.figures],
            "plan": result.plan.to_dict(),
            "config": result.best.to_dict(),
        }
        sys.stdout.write(json.dumps(out_json, indent=2) + "\n")
        return
    console.print(
        f"study [bold]{st.study_name}[/] in {shown}: "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        + f" · best validation loss {st.best_value:.4g} at width {result.proxy_width} "
        f"(trial {st.best_trial.number}) · {result.seconds:.0f} s"
    )
    if result.space is not None:
        console.print(f"searched: {describe_space(result.space)}", highlight=False)
    console.print(
        "base hyperparameters (at base width "
        f"{result.best.base_width}): " + ", ".join(f"{k} = {v:.4g}" for k, v in tuned.items())
    )
    # the tied embedding/readout note only for a model that ties them
    tied = tied_readout(model, task, result.best, result.proxy_width)
    console.print(render_plans([result.plan], result.best, f"study {st.study_name}", tied=tied))
    for p in result.figures:
        console.print(f"figure: {p}")
    console.print(
        f"next: hptransfer suggest --width {result.plan.width} --study {shown} --study-name {st.study_name}",
        highlight=False,
        soft_wrap=True,
    )
