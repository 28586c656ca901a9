"""Learning-rate and weight-decay sweeps across widths: the classic muP transfer plot.

Every run is one Optuna trial in one study, asked with its point ``(width, base lr, seed)`` or
``(width, base wd, seed)`` fixed (so a wider grid or more seeds later add to the same study), stored
in SQLite in the output directory by default (any storage URL
:func:`hptransfer.tuning.storage.make_storage` takes otherwise), so a killed sweep resumes without
repeating a finished run, and several workers can share one RDB storage.

The optimum of each width's curve is fitted by a parabola in log2 around the grid minimum
(:func:`fit_optimum`, numpy only). This module imports neither torch nor optuna at module
level: the fit and the checks are usable without them.

Example:
    >>> from hptransfer.tuning.sweep import SweepSpec, run_sweep            # doctest: +SKIP
    >>> spec = SweepSpec(task="regression", rule="mup", widths=(64, 256, 1024),
    ...                  grid=tuple(2.0**k for k in range(-10, -3)), steps=200)
    >>> result = run_sweep(spec, out_dir="sweeps/mup-lr")              # doctest: +SKIP
    >>> result.drift                                                    # doctest: +SKIP
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hptransfer.scaling import ConfigError, ProxyConfig, check_width

if TYPE_CHECKING:
    import optuna

__all__ = [
    "Optimum",
    "RunRecord",
    "SweepResult",
    "SweepSpec",
    "check_widths",
    "drift",
    "fit_optimum",
    "log2_grid",
    "log2_values",
    "plot_sweep",
    "run_sweep",
    "summarise",
]

Param = Literal["lr", "wd"]
_PARAM_LABEL = {"lr": "base learning rate", "wd": "base weight decay (torch AdamW, × lr per step)"}


# -- the optimum fit (pure numpy) ------------------------------------------------------------
@dataclass(frozen=True)
class Optimum:
    """The fitted optimum of one loss-vs-log2(value) curve.

    ``log2``: position of the optimum; ``loss``: the fitted (or grid) loss there;
    ``at_edge``: the grid minimum is the first or last finite point, so the true optimum may lie
    outside the grid; ``fitted``: a parabola was fitted (False: the grid minimum is returned).
    """

    log2: float
    loss: float
    at_edge: bool
    fitted: bool

    @property
    def value(self) -> float:
        return float(2.0**self.log2)


def fit_optimum(log2_values: Sequence[float], losses: Sequence[float], *, window: int = 1) -> Optimum:
    """Fit ``loss ≈ a·x² + b·x + c`` (x = log2 value) on the grid minimum and ``window`` points
    either side, and return the vertex, clipped to the fitted span.

    Non-finite losses (diverged runs) are ignored. When the minimum is at an edge of the finite
    points, or the parabola opens downward, the grid minimum is returned with ``fitted=False``.

    Raises:
        ValueError: fewer than one finite loss, or mismatched lengths.

    Example:
        >>> round(fit_optimum([-3, -2, -1, 0], [3.0, 2.0, 2.0, 3.0]).log2, 9)
        -1.5
    """
    x = np.asarray(log2_values, dtype=float)
    y = np.asarray(losses, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"log2_values and losses must be 1-D of equal length, got {x.shape}, {y.shape}")
    order = np.argsort(x)
    x, y = x[order], y[order]
    ok = np.isfinite(y)
    if not ok.any():
        raise ValueError("no finite loss on the grid (every run diverged)")
    xf, yf = x[ok], y[ok]
    i = int(np.argmin(yf))
    at_edge = i == 0 or i == len(xf) - 1
    if at_edge or len(xf) < 3:
        return Optimum(float(xf[i]), float(yf[i]), at_edge=True, fitted=False)
    lo, hi = max(0, i - window), min(len(xf), i + window + 1)
    a, b, c = np.polyfit(xf[lo:hi], yf[lo:hi], 2)
    if a <= 0:
        return Optimum(float(xf[i]), float(yf[i]), at_edge=False, fitted=False)
    vertex = float(np.clip(-b / (2 * a), xf[lo], xf[hi - 1]))
    return Optimum(vertex, float(a * vertex**2 + b * vertex + c), at_edge=False, fitted=True)


def drift(optima: Mapping[int, Optimum]) -> float:
    """``max − min`` of the log2 optimum over all widths (not first vs last: an optimum that
    wanders and comes back still drifts).

    Example:
        >>> drift({64: Optimum(-7.0, 1, False, True), 128: Optimum(-6.0, 1, False, True),
        ...        256: Optimum(-7.0, 1, False, True)})
        1.0
    """
    if len(optima) < 2:
        raise ValueError("drift needs optima at two widths or more")
    xs = [o.log2 for o in optima.values()]
    return max(xs) - min(xs)


#: Most points a grid may have (a typo such as step 0.00001 would otherwise run for days).
MAX_GRID_POINTS = 1000


def _check_exponent(k: float) -> float:
    if not math.isfinite(k) or not -1000 <= k <= 1000:
        raise ConfigError(f"grid exponent {k} is outside -1000..1000 (values are 2^k)")
    return float(k)


def log2_grid(start: float, stop: float, step: float = 1.0) -> tuple[float, ...]:
    """``2**k`` for k from ``start`` to ``stop`` inclusive in steps of ``step``.

    Raises:
        ConfigError: a step that is not positive, exponents outside -1000..1000, or more than
            :data:`MAX_GRID_POINTS` points.

    Example:
        >>> log2_grid(-3, -1)
        (0.125, 0.25, 0.5)
    """
    start, stop = _check_exponent(start), _check_exponent(stop)
    if not math.isfinite(step) or step <= 0:
        raise ConfigError(f"grid step must be > 0, got {step}")
    n = math.floor((stop - start) / step + 1e-9) + 1
    if n > MAX_GRID_POINTS:
        raise ConfigError(
            f"grid {start:g}:{stop:g}:{step:g} has {n} points (at most {MAX_GRID_POINTS}); use a larger step"
        )
    return tuple(2.0 ** (start + j * step) for j in range(n))


def log2_values(exponents: Sequence[float]) -> tuple[float, ...]:
    """``2**k`` for each k (checked as in :func:`log2_grid`).

    Example:
        >>> log2_values([-2, 0])
        (0.25, 1.0)
    """
    if len(exponents) > MAX_GRID_POINTS:
        raise ConfigError(f"grid has {len(exponents)} points (at most {MAX_GRID_POINTS})")
    return tuple(2.0 ** _check_exponent(k) for k in exponents)


def check_widths(widths: Sequence[int], config: ProxyConfig | None = None) -> tuple[int, ...]:
    """Widths as ints, strictly increasing and valid for ``config``; else a :class:`ConfigError`."""
    if not widths:
        raise ConfigError("no widths given; pass e.g. --widths 64,128,256")
    out = tuple(check_width(config, w) if config is not None else int(w) for w in widths)
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ConfigError(
            f"widths must be strictly increasing, got {list(out)}; sort them and drop duplicates"
        )
    return out


def _check_grid(grid: Sequence[float], param: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in grid)
    if len(out) < 3:
        raise ConfigError(
            f"the {param} grid has {len(out)} point(s); an optimum fit needs at least "
            "3 (e.g. --grid=-10:-4 for 2^-10 … 2^-4)"
        )
    if any(not math.isfinite(v) or v <= 0 for v in out):
        raise ConfigError(f"the {param} grid must hold positive finite values, got {list(out)}")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ConfigError(f"the {param} grid must be strictly increasing, got {list(out)}")
    return out


# -- specification and records ---------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """What to sweep. ``grid`` holds base values of ``param`` (lr or wd at the base width); the
    other hyperparameters come from ``config`` (default: the task's built-in proxy config)."""

    task: str = "charlm"
    rule: str | None = None
    widths: tuple[int, ...] = (64, 128, 256)
    param: Param = "lr"
    grid: tuple[float, ...] = log2_grid(-10, -4)
    seeds: tuple[int, ...] = (0,)
    steps: int = 200
    batch_size: int = 32
    config: ProxyConfig | None = None
    data_kwargs: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    schedule: str = "constant"
    warmup: int = 0
    extra_seeds: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def resolved_config(self) -> ProxyConfig:
        if self.config is not None:
            return self.config
        from hptransfer.data import TASKS  # torch import, only when needed
        from hptransfer.models import builtin_config

        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)}")
        return builtin_config(TASKS[self.task].config)

    def rule_name(self) -> str:
        cfg = self.resolved_config()
        return (cfg.with_rule(self.rule) if self.rule else cfg).scaling_rule().name

    def validate(self) -> None:
        """Raise :class:`ConfigError` on bad widths, grid, seeds or steps."""
        if self.param not in ("lr", "wd"):
            raise ConfigError(f"param must be 'lr' or 'wd', got {self.param!r}")
        cfg = self.resolved_config()
        check_widths(self.widths, cfg)
        _check_grid(self.grid, self.param)
        if not self.seeds:
            raise ConfigError("no seeds given")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.schedule not in ("constant", "cosine", "linear"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose constant, cosine or linear")
        if not 0 <= self.warmup <= self.steps:
            raise ConfigError(f"warmup must be between 0 and steps ({self.steps}), got {self.warmup}")
        try:
            self.rule_name()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def seeds_at(self, width: int) -> tuple[int, ...]:
        """Seeds run at ``width``: ``seeds`` plus any ``extra_seeds[width]``."""
        return tuple(dict.fromkeys((*self.seeds, *self.extra_seeds.get(width, ()))))

    def points(self) -> list[tuple[int, float, int]]:
        """Every (width, value, seed), widths ascending."""
        return [(w, v, s) for w in self.widths for v in self.grid for s in self.seeds_at(w)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "rule": self.rule_name(),
            "param": self.param,
            "widths": list(self.widths),
            "grid": list(self.grid),
            "seeds": list(self.seeds),
            "extra_seeds": {str(k): list(v) for k, v in sorted(self.extra_seeds.items())},
            "steps": self.steps,
            "batch_size": self.batch_size,
            "config": self.resolved_config().to_dict(),
            "data_kwargs": dict(self.data_kwargs),
            "model_kwargs": dict(self.model_kwargs),
            "schedule": self.schedule,
            "warmup": self.warmup,
        }


@dataclass(frozen=True)
class RunRecord:
    """One finished run."""

    width: int
    value: float
    seed: int
    val_loss: float
    diverged: bool
    steps: int
    seconds: float

    @property
    def log2(self) -> float:
        return math.log2(self.value)


@dataclass
class SweepResult:
    """All runs of a sweep, the fitted optimum per width and the drift across widths."""

    spec: dict[str, Any]
    records: list[RunRecord]
    optima: dict[int, Optimum]
    curves: dict[int, tuple[list[float], list[float]]]

    @property
    def drift(self) -> float | None:
        return drift(self.optima) if len(self.optima) >= 2 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "drift_log2": self.drift,
            "optima": {str(w): {**asdict(o), "value": o.value} for w, o in self.optima.items()},
            "runs": [
                {**asdict(r), "val_loss": None if math.isinf(r.val_loss) else r.val_loss}
                for r in self.records
            ],
        }


def summarise(spec: Mapping[str, Any], records: Sequence[RunRecord], *, window: int = 1) -> SweepResult:
    """Mean loss over seeds per (width, value) (a diverged seed makes the point diverged) and
    the fitted optimum of each width's curve (``window`` grid points either side of the minimum
    enter the parabola fit; 2 is steadier on noisy curves)."""
    curves: dict[int, tuple[list[float], list[float]]] = {}
    optima: dict[int, Optimum] = {}
    for w in sorted({r.width for r in records}):
        values = sorted({r.value for r in records if r.width == w})
        xs, ys = [], []
        for v in values:
            runs = [r.val_loss for r in records if r.width == w and r.value == v]
            xs.append(math.log2(v))
            ys.append(math.inf if any(not math.isfinite(x) for x in runs) else float(np.mean(runs)))
        curves[w] = (xs, ys)
        if any(math.isfinite(y) for y in ys):
            optima[w] = fit_optimum(xs, ys, window=window)
    return SweepResult(spec=dict(spec), records=list(records), optima=optima, curves=curves)


# -- running ---------------------------------------------------------------------------------
TrainFn = Callable[[int, float, int], Any]
"""``train_fn(width, value, seed)`` -> an object with ``val_loss``, ``diverged``, ``steps``."""


def _default_train_fn(spec: SweepSpec, factory: Callable[[int], Any] | None) -> TrainFn:
    from dataclasses import replace

    from hptransfer.training import train_proxy

    cfg = spec.resolved_config()

    def run(width: int, value: float, seed: int) -> Any:
        return train_proxy(
            spec.task,
            width,
            replace(cfg, lr=value) if spec.param == "lr" else replace(cfg, weight_decay=value),
            rule=spec.rule,
            steps=spec.steps,
            batch_size=spec.batch_size,
            seed=seed,
            factory=factory,
            data_kwargs=spec.data_kwargs,
            model_kwargs=spec.model_kwargs,
            schedule=spec.schedule,
            warmup=spec.warmup,
        )

    return run


def check_factory(factory: Callable[[int], Any], widths: Sequence[int]) -> None:
    """Raise :class:`ConfigError` when ``factory`` builds the same shapes at two widths."""
    import torch

    from hptransfer.scaling.torch_adapter import ClassificationError, classify, meta_model

    lo, hi = widths[0], widths[-1] if widths[-1] != widths[0] else 2 * widths[0]
    built = {}
    for w in (hi, lo):
        try:
            built[w] = meta_model(factory, w)
        except Exception as exc:  # the user's code: one line naming what it raised
            why = str(exc).splitlines()[0] if str(exc) else ""
            raise ConfigError(f"model factory({w}) raised {type(exc).__name__}: {why}") from None
        if not isinstance(built[w], torch.nn.Module):
            raise ConfigError(f"model factory({w}) returned {type(built[w]).__name__}, not a torch.nn.Module")
    try:
        classify(built[hi], built[lo])
    except ClassificationError as exc:
        if "same shapes" in str(exc):
            raise ConfigError(
                f"the model factory ignores width: factory({lo}) and factory({hi}) have the same "
                "parameter shapes; make the hidden size depend on the width argument"
            ) from None
        raise ConfigError(f"model factory: {exc}") from None


def _study_name(spec_dict: Mapping[str, Any]) -> str:
    return f"sweep-{spec_dict['task']}-{spec_dict['rule']}-{spec_dict['param']}"


def _match(values: Sequence[float], v: float) -> float | None:
    return next((g for g in values if math.isclose(g, v, rel_tol=1e-9)), None)


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path | None = None,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    factory: Callable[[int], Any] | None = None,
    train_fn: TrainFn | None = None,
    progress: bool = True,
    on_run: Callable[[RunRecord], None] | None = None,
    plot: bool = True,
) -> SweepResult:
    """Run (or resume) ``spec``: one Optuna trial per (width, value, seed) not yet finished.

    Args:
        out_dir: where ``sweep.db`` (default storage), ``sweep_<param>.json/.csv`` and the
            figure ``sweep_<param>.png/.svg`` go. None: in-memory storage, nothing written.
        storage: an Optuna storage URL (``sqlite:///…``, ``postgresql://…``) instead.
        factory: ``factory(width) -> nn.Module`` replacing the built-in model.
        train_fn: replaces the whole training run (``train_fn(width, value, seed)``), e.g. a
            baseline trained outside hptransfer's adapter.
        on_run: called after each finished run (its exceptions propagate: the sweep stops and
            resumes later from there).

    Returns:
        :class:`SweepResult` over every finished run of the study (including earlier sessions).

    Raises:
        ConfigError: bad widths, grid, seeds, a factory that ignores width, or a storage that
            holds a different sweep under the same study name.
    """
    import optuna

    from hptransfer.tuning.storage import StorageError, make_storage, mask_url

    spec.validate()
    if factory is not None:
        check_factory(factory, spec.widths)
    spec_dict = spec.to_dict()
    out = Path(out_dir) if out_dir is not None else None
    # No heartbeat: a run left RUNNING by a killed sweep is found by its point and retrained by
    # the loop below (Optuna's heartbeat retry would re-enqueue it outside the sweep's order).
    # A storage given is opened first: a bad URL must not leave an empty output folder behind.
    store = make_storage(storage, heartbeat_interval=None) if storage is not None else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
        if store is None:
            storage = f"sqlite:///{(out / 'sweep.db').resolve()}"
            store = make_storage(storage, heartbeat_interval=None)
    where = mask_url(storage) if storage is not None else "memory"
    name = study_name or _study_name(spec_dict)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    key = spec.param
    n_seeds = len({s for w in spec.widths for s in spec.seeds_at(w)})
    try:
        study = optuna.create_study(study_name=name, storage=store, load_if_exists=True, direction="minimize")
    except Exception as exc:  # a database that answered the handshake but fails on queries
        raise StorageError(f"cannot open study {name!r} in {where}: {exc}") from None
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", json.loads(json.dumps(spec_dict)))
    else:
        fixed = {k: v for k, v in stored.items() if k not in ("extra_seeds", "seeds", "widths", "grid")}
        now = {k: v for k, v in json.loads(json.dumps(spec_dict)).items() if k in fixed}
        if fixed != now:
            diff = sorted(k for k in fixed if fixed[k] != now.get(k))
            raise ConfigError(
                f"study {name!r} in {where} holds a sweep with other settings (differs in: "
                f"{', '.join(diff)}); use another output directory or --study-name, or the same "
                "settings to resume"
            )

    def done_records() -> dict[tuple[int, float, int], RunRecord]:
        recs: dict[tuple[int, float, int], RunRecord] = {}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if key not in t.params:
                continue
            v = _match(spec.grid, t.params[key]) or float(t.params[key])
            rec = RunRecord(
                width=int(t.params["width"]),
                value=v,
                seed=int(t.params["seed"]),
                val_loss=float(t.value) if t.value is not None else math.inf,
                diverged=bool(t.user_attrs.get("diverged", False)),
                steps=int(t.user_attrs.get("steps", 0)),
                seconds=float(t.user_attrs.get("seconds", 0)),
            )
            recs.setdefault((rec.width, rec.value, rec.seed), rec)
        return recs

    done = done_records()
    pending = [p for p in spec.points() if p not in done]
    stale = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    run_fn = train_fn or _default_train_fn(spec, factory)

    def run_point(point: tuple[int, float, int]) -> None:
        """One trial for ``point``, asked with the point fixed (single-value distributions: no
        sampler involved, and a wider grid or more seeds later stay compatible with the study)."""
        w, v, s = point
        fixed = {
            "width": optuna.distributions.IntDistribution(w, w),
            key: optuna.distributions.FloatDistribution(v, v, log=True),
            "seed": optuna.distributions.IntDistribution(s, s),
        }
        while True:
            try:
                trial = study.ask(fixed)
            except ValueError as exc:  # e.g. a study of an older version, its grid categorical
                raise ConfigError(
                    f"study {name!r} in {where} cannot take this sweep's runs ({exc}); use another "
                    "output directory or --study-name"
                ) from None
            p = trial.params
            if (p.get("width"), p.get(key), p.get("seed")) == point:
                break
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # someone's queued trial, not ours
        try:
            start = time.perf_counter()
            res = run_fn(*point)
            rec = RunRecord(
                width=w,
                value=v,
                seed=s,
                val_loss=float(res.val_loss) if not res.diverged else math.inf,
                diverged=bool(res.diverged),
                steps=int(res.steps),
                seconds=time.perf_counter() - start,
            )
            for attr in ("diverged", "steps", "seconds"):
                trial.set_user_attr(attr, getattr(rec, attr))
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(trial, rec.val_loss)
        done[point] = rec

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    total = len(spec.points())
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        task_id = bar.add_task(
            f"{spec_dict['rule']} {key} sweep", total=total, completed=total - len(pending)
        )
        for w, v, s in pending:
            if (w, v, s) not in done:
                done.update(done_records())  # another worker may have finished it meanwhile
            if (w, v, s) in done:
                bar.advance(task_id)
                continue
            bar.update(
                task_id,
                description=f"{spec_dict['rule']} · width {w} · {key} 2^{math.log2(v):g}"
                + (f" · seed {s}" if n_seeds > 1 else ""),
            )
            run_point((w, v, s))
            bar.advance(task_id)
            if on_run is not None and (w, v, s) in done:
                on_run(done[(w, v, s)])  # after the trial is stored: a kill here loses nothing
    _tidy_stale(study, done, key, stale)
    wanted = set(spec.points())
    records = [r for p, r in sorted(done.items()) if p in wanted]
    result = summarise(spec_dict, records)
    if out is not None:
        save_results(result, out)
        if plot:
            plot_sweep(result, out / f"sweep_{key}")
    return result


def _tidy_stale(
    study: optuna.Study, done: Mapping[tuple[int, float, int], RunRecord], key: str, candidates: set[int]
) -> None:
    """Mark trials that were already RUNNING when this session began (left by a killed session)
    and whose point has since finished as FAIL; trials other live workers started later are
    left alone. ``candidates``: trial numbers."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number not in candidates:
            continue
        p = t.params
        if key in p and (int(p["width"]), float(p[key]), int(p["seed"])) in done:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Write to ``path.tmp``, then replace ``path``: a full disk or Ctrl-C leaves the previous
    file (a rerun's results, figures), never half of a new one, and no ``.tmp``. The name is the
    writer's own: two sweeps finishing together in one ``--out`` must not take each other's."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_results(result: SweepResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``sweep_<param>.json`` (spec, optima, drift, runs) and ``sweep_<param>.csv``."""
    out = Path(out_dir)
    key = result.spec["param"]
    js, cs = out / f"sweep_{key}.json", out / f"sweep_{key}.csv"
    with _replacing(js) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    with _replacing(cs) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["width", key, "log2_" + key, "seed", "val_loss", "diverged", "steps", "seconds"])
        for r in result.records:
            writer.writerow(
                [
                    r.width,
                    r.value,
                    r.log2,
                    r.seed,
                    "" if math.isinf(r.val_loss) else f"{r.val_loss:.6f}",
                    int(r.diverged),
                    r.steps,
                    f"{r.seconds:.2f}",
                ]
            )
    return js, cs


def plot_sweep(result: SweepResult, path_stem: str | Path) -> list[Path]:
    """Validation loss vs log2 value, one curve per width (viridis, narrow → wide), fitted optima
    as stars, diverged points as red × on the top edge; writes ``<stem>.png`` and ``.svg``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    key = result.spec["param"]
    widths = sorted(result.curves)
    cmap = plt.get_cmap("viridis")
    finite = [y for xs, ys in result.curves.values() for y in ys if math.isfinite(y)]
    if finite:
        lo, best_hi = min(finite), sorted(finite)[len(finite) // 2]
        span = max(best_hi - lo, 1e-3)
        top = min(max(finite), lo + 3 * span)
        ax.set_ylim(lo - 0.1 * span, top + 0.15 * span)
    else:
        top = 1.0
    diverged_drawn = False
    for i, w in enumerate(widths):
        color = cmap(i / max(1, len(widths) - 1))
        xs, ys = result.curves[w]
        fx = [x for x, y in zip(xs, ys) if math.isfinite(y)]
        fy = [y for y in ys if math.isfinite(y)]
        ax.plot(fx, fy, "o-", color=color, ms=3.5, lw=1.4, label=f"width {w}")
        dx = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
        if dx:
            ax.plot(
                dx,
                [top + 0.1 * (top - (min(finite) if finite else 0))] * len(dx),
                "x",
                color="tab:red",
                ms=7,
                mew=2,
                label=None if diverged_drawn else "diverged",
                clip_on=False,
            )
            diverged_drawn = True
        opt = result.optima.get(w)
        if opt is not None:
            ax.plot([opt.log2], [opt.loss], "*", color=color, ms=11, mec="black", mew=0.6)
    ax.set_xlabel(f"log2 {_PARAM_LABEL[key]}")
    ax.set_ylabel("validation loss")
    d = result.drift
    drift_text = f" · drift {d:.2f} (log2, max − min)" if d is not None else ""
    ax.set_title(f"{result.spec['task']} · {result.spec['rule']} · {key} sweep{drift_text}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    stem = Path(path_stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    try:
        for p in paths:
            with _replacing(p) as tmp:
                fig.savefig(tmp, dpi=130, format=p.suffix[1:])
    finally:
        plt.close(fig)
    return paths
