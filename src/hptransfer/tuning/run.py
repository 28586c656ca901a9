"""``tune()``: the Python function behind ``hptransfer tune`` (one proxy study, end to end).

Torch is imported only when training starts.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hptransfer.scaling import ConfigError, Plan, ProxyConfig, check_width, suggest
from hptransfer.tuning.builtin import builtin_trainer, resolve_model
from hptransfer.tuning.objective import TransferObjective, WidthLadder
from hptransfer.tuning.space import SearchSpace, default_space
from hptransfer.tuning.study import open_study
from hptransfer.tuning.transfer import best_config

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_HEARTBEAT",
    "PRUNERS",
    "TuneInterrupted",
    "TuneResult",
    "describe_space",
    "load_space",
    "make_pruner",
    "tune",
]

PRUNERS = ("median", "hyperband", "none")
#: Seconds between a running trial's heartbeats, and without one before the trial counts as dead
#: (SQLite and PostgreSQL storages; the journal storage has no heartbeat).
DEFAULT_HEARTBEAT = 10
DEFAULT_GRACE = 60


class TuneInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`tune`: the finished trials are kept in the study.

    ``finished`` counts the study's complete and pruned trials now; ``target`` is the total the
    interrupted call was aiming at (its earlier trials plus ``trials``, or ``total_trials``).
    """

    def __init__(self, study_name: str, finished: int, target: int) -> None:
        super().__init__(study_name)
        self.study_name = study_name
        self.finished = finished
        self.target = target


def _check_factory(factory: Callable[[int], Any], width: int) -> None:
    """Build the user's model at ``width`` on the meta device (no memory, no training), or on the
    CPU when its init needs real tensors."""
    import torch

    from hptransfer.scaling.torch_adapter import meta_model

    try:
        model = meta_model(factory, width)
    except Exception:
        try:  # some inits need real tensors (.item(), loaded weights): the proxy is small
            model = factory(width)
        except Exception as exc:  # the user's code: one line naming what it raised
            why = str(exc).splitlines()[0] if str(exc) else ""
            raise ConfigError(f"model factory({width}) raised {type(exc).__name__}: {why}") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model factory({width}) returned {type(model).__name__}, not a torch.nn.Module")


def _finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


@dataclass
class TuneResult:
    """A finished ``tune()`` call."""

    study: optuna.Study
    best: ProxyConfig  # base config with the best trial's base hyperparameters
    plan: Plan  # ``best`` carried to the target width
    proxy_width: int
    space: SearchSpace | None = None  # what the trials of this call searched
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def load_space(path: str | Path) -> SearchSpace:
    """A search space from a TOML (``.toml``) or JSON (``.json``) file: one table per base
    hyperparameter, ``{low, high, log}`` (``log`` defaults to true)::

        [lr]
        low = 0.0002
        high = 0.1
        [output_mult]
        low = 0.125
        high = 8
        log = true

    Raises:
        ConfigError: missing or unreadable file, bad syntax, an unknown name or a bad range.
    """
    import json

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"search space file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read search space file {p}: {exc}") from None
    kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {kind}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"{p}: a search space maps each base hyperparameter to {{low, high, log}}, "
            "e.g. lr = {low = 0.0002, high = 0.1}"
        )
    try:
        return SearchSpace.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def _bound(x: float, log: bool) -> str:
    k = math.log2(x) if log and x > 0 else math.nan
    return f"2^{k:g}" if math.isfinite(k) and k == round(k) and k != 0 else f"{x:g}"


def describe_space(space: SearchSpace) -> str:
    """One line per base hyperparameter, e.g. ``lr 2^-12..2^-3 (log)``.

    Example:
        >>> from hptransfer.tuning import Range
        >>> describe_space(SearchSpace({"lr": Range(2**-12, 2**-3), "output_mult": Range(0.5, 3, log=False)}))
        'lr 2^-12..2^-3 (log); output_mult 0.5..3 (linear)'
    """
    return "; ".join(
        f"{name} {_bound(r.low, r.log)}..{_bound(r.high, r.log)} ({'log' if r.log else 'linear'})"
        for name, r in space.ranges.items()
    )


def make_pruner(name: str, *, steps: int, eval_every: int | None) -> optuna.pruners.BasePruner:
    """``median`` (MedianPruner after 5 trials), ``hyperband`` (steps as the resource) or ``none``.

    Without ``eval_every`` there are no intermediate values and every pruner is a no-op.
    """
    import optuna

    if name not in PRUNERS:
        raise ConfigError(f"unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}")
    if name == "none" or not eval_every:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=eval_every)
    return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=steps, reduction_factor=3)


def tune(
    model: str = "llama",
    width: int | None = None,
    trials: int = 50,
    *,
    storage: str | BaseStorage | None = None,
    study_name: str | None = None,
    jobs: int = 1,
    steps: int = 200,
    force: bool = False,
    out: str | Path | None = None,
    target_width: int | None = None,
    task: str | None = None,
    config: ProxyConfig | None = None,
    space: SearchSpace | None = None,
    fixed: Sequence[str] = (),
    ladder_widths: Sequence[int] = (),
    reduction_factor: int = 3,
    eval_every: int | None = None,
    pruner: str = "median",
    seed: int = 0,
    sampler_seed: int | None = None,
    batch_size: int = 32,
    data_kwargs: Mapping[str, Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    total_trials: int | None = None,
    heartbeat: int | None = DEFAULT_HEARTBEAT,
    grace: int | None = DEFAULT_GRACE,
) -> TuneResult:
    """Run (or extend) a proxy study of a built-in model or a ``MODULE:FACTORY`` model.

    Args:
        model: ``"llama"`` (char-level LM), ``"mlp"`` (regression) or ``"MODULE:FACTORY"``.
        width: proxy width the trials train at (default: the config's base width).
        trials: trials to add (an existing study keeps its earlier trials).
        total_trials: instead of ``trials``: top the study up to this many finished (complete or
            pruned) trials, counting every worker's; nothing trains when it has them already.
        storage: storage URL (default ``sqlite:///hptransfer.db``).
        study_name: default ``"{model}-w{width}"``.
        jobs: parallel trials in this process (threads); run more processes for more workers.
        steps: training steps per trial (per rung with a ladder).
        force: add to a study created under another rule or base width.
        out: folder for the figures (none when ``None``).
        target_width: the width to carry the best trial to (default 8 × width).
        space: base hyperparameter ranges (default :func:`default_space`, without
            ``attn_mult`` for a model without attention); recorded in the study.
        fixed: names to leave out of ``space``: they keep the config's value.
        ladder_widths: smaller widths tried first (width as a fidelity, see :class:`WidthLadder`);
            the last rung is ``width``.
        eval_every: report the validation loss every this many steps (enables pruning).
        pruner: ``median``, ``hyperband`` or ``none`` (ignored with a ladder: it has its own).
        seed: training seed (model init and batch order), the same for every trial.
        sampler_seed: TPE seed; ``None`` (default) draws one, so that workers started at once on
            one study do not repeat each other's random start-up trials.
        heartbeat: seconds between a running trial's heartbeats (SQLite/PostgreSQL); ``None``
            disables crash recovery.
        grace: seconds without a heartbeat after which another worker's trial is dead: it is
            marked FAIL and retried once with the same parameters. Running workers check every
            ``heartbeat`` seconds, not only between their own trials.

    Raises:
        TuneInterrupted: Ctrl-C (a :class:`KeyboardInterrupt`); finished trials are kept.

        ConfigError: bad model/width/storage, a study mismatch, or no trial finished.
    """
    import optuna

    start = time.perf_counter()
    choice = resolve_model(model, task=task, config=config)
    cfg = choice.config
    w = check_width(cfg, width if width is not None else cfg.base_width)
    target = check_width(cfg, target_width if target_width is not None else 8 * w)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials must be a positive integer, got {trials!r}")
    if total_trials is not None and (
        isinstance(total_trials, bool) or not isinstance(total_trials, int) or total_trials < 1
    ):
        raise ConfigError(f"--total-trials must be a positive integer, got {total_trials!r}")
    for opt, secs in (("--heartbeat", heartbeat), ("--grace", grace)):
        bad = isinstance(secs, bool) or not isinstance(secs, int) or not 1 <= secs <= 86400
        if secs is not None and bad:
            raise ConfigError(f"{opt} must be a whole number of seconds from 1 to 86400, got {secs!r}")
    if heartbeat is not None and grace is not None and grace <= heartbeat:
        raise ConfigError(
            f"--grace ({grace} s) must be longer than --heartbeat ({heartbeat} s), or a live worker's "
            "trial would be taken for dead; e.g. --grace 60 with --heartbeat 10"
        )
    if steps < 1:
        raise ConfigError(f"--steps must be a positive integer, got {steps}")
    if eval_every is not None and not 1 <= eval_every <= steps:
        raise ConfigError(f"--eval-every must be between 1 and --steps ({steps}), got {eval_every}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if out is not None:  # before any training: a bad folder must not cost the whole study
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    ladder = None
    if ladder_widths:
        ladder = WidthLadder(
            widths=(*ladder_widths, w),
            steps=(steps,) * (len(ladder_widths) + 1),
            reduction_factor=reduction_factor,
        )
    if space is None:
        space = default_space()
        if cfg.heads_at(cfg.base_width) is None:  # no attention: nothing for attn_mult to do
            space = space.without("attn_mult")
    unknown = [n for n in fixed if n not in space.ranges]
    if unknown:
        raise ConfigError(
            f"--no-tune {', '.join(unknown)}: not in the search space ({', '.join(space.ranges)})"
        )
    if fixed:
        if set(space.ranges) <= set(fixed):
            raise ConfigError("--no-tune leaves nothing to tune; drop one of the names or use --space FILE")
        space = space.without(*fixed)
    if choice.factory is not None:  # a broken factory must fail here, not as every trial of a new study
        _check_factory(choice.factory, w)
    study = open_study(
        study_name or f"{choice.name.replace(':', '.')}-w{w}",
        cfg,
        storage=storage,
        space=space,
        proxy_width=w,
        sampler=optuna.samplers.TPESampler(
            seed=sampler_seed, n_startup_trials=min(10, max(2, (total_trials or trials) // 3))
        ),
        pruner=ladder.pruner() if ladder else make_pruner(pruner, steps=steps, eval_every=eval_every),
        force=force,
        extra_attrs={
            "model": choice.name,
            "task": choice.task,
            "steps": steps,
            "ladder": list(ladder.widths) if ladder else None,
        },
        heartbeat_interval=heartbeat,
        grace_period=grace if heartbeat is not None else None,
        max_retry=1,
    )
    train = builtin_trainer(
        choice,
        batch_size=batch_size,
        seed=seed,
        eval_every=None if ladder else eval_every,
        data_kwargs=data_kwargs,
        model_kwargs=model_kwargs,
    )
    objective = TransferObjective(train, cfg, width=w, space=space, steps=steps, ladder=ladder)
    from hptransfer.tuning.storage import reap_stale_trials

    before = _finished(study)
    goal = total_trials if total_trials is not None else before + trials
    todo = goal - before
    every = list(callbacks)
    if total_trials is not None:  # other workers' trials count too
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        every.append(optuna.study.MaxTrialsCallback(total_trials, states=done))
    try:
        if todo > 0:
            with reap_stale_trials(study, heartbeat):
                study.optimize(objective, n_trials=todo, n_jobs=jobs, callbacks=every)
    except KeyboardInterrupt:
        raise TuneInterrupted(study.study_name, _finished(study), goal) from None
    best = best_config(study)
    plan = suggest(best, target)
    figures: list[Path] = []
    if out is not None:
        from hptransfer.tuning.plots import plot_study

        figures = plot_study(study, out, target)
    return TuneResult(
        study=study,
        best=best,
        plan=plan,
        proxy_width=w,
        space=space,
        figures=figures,
        seconds=time.perf_counter() - start,
    )
