"""``TransferObjective``: a user's training function as an Optuna objective in base units.

The user writes ``train(plan, trial) -> float`` (the validation loss of a model built at
``plan.width`` with ``plan``'s per-class lr, weight decay, init std and multipliers). The wrapper

* samples the base hyperparameters from a :class:`~hptransfer.tuning.space.SearchSpace`, builds the
  trial's :class:`~hptransfer.scaling.ProxyConfig` and carries it to the trial's width with
  :func:`~hptransfer.scaling.suggest`;
* gives the training loop a :func:`reporter` (``callback(step, value)``) that reports
  intermediate values and raises :class:`optuna.TrialPruned` when the study's pruner says so
  (steps as the resource: ``MedianPruner``, ``SuccessiveHalvingPruner``, ``HyperbandPruner``);
* turns NaN/inf values (returned or reported) into a FAILed trial and records exceptions in the
  trial's user attributes (``hptransfer.error``), so one diverging trial never stops a study;
* optionally uses **width as a fidelity** (:class:`WidthLadder`): a trial trains at the smallest
  width first and only the best fraction goes on to the next, wider rung (asynchronous
  successive halving over width and steps, decided by Optuna's own ``SuccessiveHalvingPruner``).

``train`` may also take keyword arguments ``steps`` (the rung's training steps) and ``config``
(the trial's base config); they are passed when the signature accepts them.

No torch here: training functions import it themselves.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import math
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hptransfer.scaling import ConfigError, Plan, ProxyConfig, check_width, suggest
from hptransfer.tuning.space import SearchSpace, default_space

if TYPE_CHECKING:
    import optuna

__all__ = [
    "Diverged",
    "TransferObjective",
    "WidthLadder",
    "reporter",
    "transfer_objective",
]

TrainFn = Callable[..., float]

# Set while a WidthLadder trial runs: rung values are the ladder's reports, so the per-step
# reporter only checks for divergence (a step axis shared across widths would mix units).
_IN_LADDER: contextvars.ContextVar[bool] = contextvars.ContextVar("hptransfer_in_ladder", default=False)


class Diverged(ArithmeticError):
    """A training run produced a NaN or infinite loss; its trial is marked FAIL."""


def reporter(trial: optuna.trial.BaseTrial) -> Callable[[int, float], None]:
    """A ``callback(step, value)`` for a training loop: reports ``value`` at ``step`` to
    ``trial`` and raises :class:`optuna.TrialPruned` when the study's pruner decides so.

    Non-finite values raise :class:`Diverged` (the wrapper turns it into a FAILed trial).
    Inside a :class:`WidthLadder` trial it only checks for divergence.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(pruner=optuna.pruners.NopPruner())
        >>> trial = study.ask()
        >>> cb = reporter(trial)
        >>> cb(10, 2.5)
        >>> study.trials[0].intermediate_values
        {10: 2.5}
    """
    import optuna

    def callback(step: int, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise Diverged(f"loss {value} at step {step}")
        if _IN_LADDER.get():
            return
        trial.report(value, int(step))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4g})")

    return callback


@dataclass(frozen=True)
class WidthLadder:
    """Width as a fidelity: rung ``k`` trains at ``widths[k]`` for ``steps[k]`` steps.

    Every trial starts at rung 0; after each rung its value is reported at step
    ``reduction_factor ** k`` and Optuna's
    ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=η, min_early_stopping_rate=0)``
    (see :meth:`pruner`) keeps it only if it is in the best ``1/η`` of the trials that reached
    that rung. Survivors retrain from scratch at the next width (a model cannot grow). COMPLETE
    trials have reached the last rung, so their values are all at ``widths[-1]``.

    Use the ladder's pruner for the study (``open_study(..., pruner=ladder.pruner())``).

    Example:
        >>> ladder = WidthLadder(widths=(64, 128, 256), steps=(100, 200, 400), reduction_factor=3)
        >>> [ladder.report_step(k) for k in range(3)]
        [1, 3, 9]
    """

    widths: tuple[int, ...]
    steps: tuple[int | None, ...] | None = None
    reduction_factor: int = 3

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        if not widths:
            raise ConfigError("a width ladder needs at least one width")
        if any(b <= a for a, b in itertools.pairwise(widths)):
            raise ConfigError(f"ladder widths must increase, got {list(widths)}")
        steps = self.steps
        if steps is not None:
            steps = tuple(None if s is None else int(s) for s in steps)
            if len(steps) != len(widths):
                raise ConfigError(f"ladder has {len(widths)} widths but {len(steps)} step counts")
        if int(self.reduction_factor) < 2:
            raise ConfigError(f"reduction_factor must be >= 2, got {self.reduction_factor}")
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "steps", steps)

    def rungs(self) -> list[tuple[int, int | None]]:
        steps = self.steps or (None,) * len(self.widths)
        return list(zip(self.widths, steps))

    def report_step(self, rung: int) -> int:
        return int(self.reduction_factor) ** rung

    def pruner(self) -> optuna.pruners.SuccessiveHalvingPruner:
        import optuna

        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=int(self.reduction_factor), min_early_stopping_rate=0
        )


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class TransferObjective:
    """Wrap ``train(plan, trial) -> float`` as an Optuna objective in base units.

    Args:
        train: the user's training function; returns the value to minimise (validation loss).
            Optional keyword arguments ``steps`` and ``config`` are passed if accepted.
        config: the base config (rule, base width, values of the parameters not tuned).
        width: width the trials train at (default: the config's base width). Ignored with
            ``ladder``.
        space: base hyperparameter ranges (default :func:`~hptransfer.tuning.default_space`).
        steps: training steps passed to ``train`` (when it accepts ``steps``).
        ladder: width as a fidelity (see :class:`WidthLadder`).
        catch_errors: record an exception from ``train`` and mark the trial FAIL (True), or let it
            propagate and stop ``study.optimize`` (False). ``KeyboardInterrupt`` always propagates.

    Example:
        >>> import math, optuna
        >>> from hptransfer.scaling import default_config
        >>> from hptransfer.tuning import Range, SearchSpace
        >>> def train(plan, trial):  # stands for a real training run at plan.width
        ...     return (math.log2(plan.base_lr) + 8) ** 2
        >>> objective = TransferObjective(train, default_config(), space=SearchSpace(
        ...     {"lr": Range(2**-12, 2**-4)}))
        >>> study = optuna.create_study()
        >>> study.optimize(objective, n_trials=5)
        >>> len(study.trials)
        5
    """

    def __init__(
        self,
        train: TrainFn,
        config: ProxyConfig,
        *,
        width: int | None = None,
        space: SearchSpace | None = None,
        steps: int | None = None,
        ladder: WidthLadder | None = None,
        catch_errors: bool = True,
    ) -> None:
        if not callable(train):
            raise ConfigError(f"train must be callable, got {train!r}")
        self.train = train
        self.config = config
        self.space = space if space is not None else default_space()
        self.ladder = ladder
        self.catch_errors = catch_errors
        # per study object: the units its user attributes record (read once, not per trial)
        self._study_units: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()
        self._pass_steps = _accepts(train, "steps")
        self._pass_config = _accepts(train, "config")
        if ladder is not None:
            for w in ladder.widths:
                check_width(config, w)
            self.width = ladder.widths[-1]
            if ladder.steps is not None and any(s is not None for s in ladder.steps) and not self._pass_steps:
                raise ConfigError("ladder steps given, but train() takes no `steps` keyword")
            self._rungs = ladder.rungs()
        else:
            self.width = check_width(config, width if width is not None else config.base_width)
            if steps is not None and not self._pass_steps:
                raise ConfigError("steps given, but train() takes no `steps` keyword")
            self._rungs = [(self.width, steps)]

    # -- pieces usable on their own -------------------------------------------------------------
    def trial_config(self, trial: optuna.trial.BaseTrial) -> ProxyConfig:
        """Sample ``trial``'s base hyperparameters and return its base config."""
        return self.space.config(self.config, self.space.sample(trial))

    def plan(self, trial: optuna.trial.BaseTrial, width: int | None = None) -> Plan:
        """``trial``'s base hyperparameters carried to ``width`` (default: the trial width)."""
        return suggest(self.trial_config(trial), width or self.width)

    def _differs_from_study(self, trial: Any, rule: str, wd_exponent: float | None, base_width: int) -> bool:
        study = getattr(trial, "study", None)
        if study is None:  # FixedTrial and friends: nothing to record into
            return False
        units = self._study_units.get(study)
        if units is None:
            attrs = study.user_attrs
            units = tuple(
                attrs.get(f"hptransfer.{k}") for k in ("rule", "wd_exponent", "base_width", "proxy_width")
            )
            self._study_units[study] = units
        return units != (rule, wd_exponent, base_width, self.width)

    # -- the objective --------------------------------------------------------------------------
    def __call__(self, trial: optuna.trial.Trial) -> float:
        import optuna

        cfg = self.trial_config(trial)
        rule = cfg.scaling_rule()
        if self._differs_from_study(trial, rule.name, rule.wd_exponent, cfg.base_width):
            # only when the study's own attributes do not describe this trial (a foreign study, or
            # one opened with force): a storage write per trial is most of the wrapper's cost
            trial.set_user_attr(
                "hptransfer.run",
                {
                    "widths": [w for w, _ in self._rungs],
                    "steps": [s for _, s in self._rungs],
                    "rule": rule.name,
                    "wd_exponent": rule.wd_exponent,
                    "base_width": cfg.base_width,
                },
            )
        token = _IN_LADDER.set(self.ladder is not None)
        try:
            value = math.nan
            last = len(self._rungs) - 1
            for k, (width, steps) in enumerate(self._rungs):
                plan = suggest(cfg, width)
                kwargs: dict[str, Any] = {}
                if self._pass_steps and steps is not None:
                    kwargs["steps"] = steps
                if self._pass_config:
                    kwargs["config"] = cfg
                value = float(self.train(plan, trial, **kwargs))
                if not math.isfinite(value):
                    raise Diverged(f"objective returned {value} at width {width}")
                if self.ladder is not None:
                    trial.report(value, self.ladder.report_step(k))
                    if k < last and trial.should_prune():
                        raise optuna.TrialPruned(
                            f"stopped at width {width} (value {value:.4g}); not in the best "
                            f"1/{self.ladder.reduction_factor} of its rung"
                        )
            return value
        except optuna.TrialPruned:
            raise
        except Diverged as exc:
            trial.set_user_attr("hptransfer.error", f"diverged: {exc}")
            return math.nan  # Optuna marks the trial FAIL and the study goes on
        except Exception as exc:
            if not self.catch_errors:
                raise
            trial.set_user_attr("hptransfer.error", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("hptransfer.traceback", traceback.format_exc()[-4000:])
            return math.nan
        finally:
            _IN_LADDER.reset(token)


def transfer_objective(
    config: ProxyConfig,
    *,
    width: int | None = None,
    space: SearchSpace | None = None,
    steps: int | None = None,
    ladder: WidthLadder | None = None,
    catch_errors: bool = True,
) -> Callable[[TrainFn], TransferObjective]:
    """Decorator form of :class:`TransferObjective`.

    Example:
        >>> import math, optuna
        >>> from hptransfer.scaling import default_config
        >>> @transfer_objective(default_config(), width=128)
        ... def train(plan, trial):
        ...     return (math.log2(plan.base_lr) + 8) ** 2
        >>> optuna.create_study().optimize(train, n_trials=2)
    """

    def wrap(fn: TrainFn) -> TransferObjective:
        return TransferObjective(
            fn, config, width=width, space=space, steps=steps, ladder=ladder, catch_errors=catch_errors
        )

    return wrap
