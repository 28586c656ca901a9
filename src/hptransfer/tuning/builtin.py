"""Training functions for ``hptransfer tune``: the built-in proxies or a user's model factory,
trained by :func:`hptransfer.training.train_proxy` (imported lazily: torch loads only here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hptransfer.factories import load_factory
from hptransfer.scaling import ConfigError, Plan, ProxyConfig

__all__ = ["BUILTIN_TASKS", "ModelChoice", "builtin_trainer", "resolve_model"]

#: built-in model name -> its task
BUILTIN_TASKS: dict[str, str] = {"llama": "charlm", "mlp": "regression"}
_ALIASES = {"charlm": "llama", "regression": "mlp", "lm": "llama"}


@dataclass(frozen=True)
class ModelChoice:
    """What ``--model`` resolved to."""

    name: str  # "llama", "mlp" or "MODULE:FACTORY"
    task: str
    factory: Callable[[int], Any] | None  # None: the built-in model
    config: ProxyConfig


def resolve_model(model: str, task: str | None = None, config: ProxyConfig | None = None) -> ModelChoice:
    """``"llama"``/``"mlp"`` (or their task names) or ``"MODULE:FACTORY"`` where
    ``FACTORY(width) -> torch.nn.Module`` takes the task's inputs.

    The config defaults to the built-in model's (for a factory: the task's built-in model's).

    Raises:
        ConfigError: unknown name, a module that cannot be imported, a missing factory.
    """
    from hptransfer.models import builtin_config, factory_config  # torch; only commands that train

    name = _ALIASES.get(model, model)
    if name in BUILTIN_TASKS:
        if task is not None and task != BUILTIN_TASKS[name]:
            raise ConfigError(f"built-in model {name!r} trains on task {BUILTIN_TASKS[name]!r}, not {task!r}")
        t = BUILTIN_TASKS[name]
        return ModelChoice(name, t, None, config or builtin_config(name))
    if ":" not in model:
        raise ConfigError(
            f"unknown model {model!r}; use a built-in one ({', '.join(BUILTIN_TASKS)}) or "
            "MODULE:FACTORY where FACTORY(width) returns a torch module"
        )
    factory = load_factory(model)
    t = task or "charlm"
    if t not in BUILTIN_TASKS.values():
        raise ConfigError(f"unknown task {t!r}; choose one of: {', '.join(BUILTIN_TASKS.values())}")
    base_model = next(n for n, tk in BUILTIN_TASKS.items() if tk == t)
    return ModelChoice(model, t, factory, config or factory_config(base_model, model))


def builtin_trainer(
    choice: ModelChoice,
    *,
    batch_size: int = 32,
    seed: int = 0,
    eval_every: int | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Callable[..., float]:
    """A ``train(plan, trial, *, steps, config) -> val_loss`` for :class:`TransferObjective`.

    With ``eval_every``, the validation loss is reported to the trial every ``eval_every`` steps
    (pruning with steps as the resource).
    """
    from hptransfer.tuning.objective import reporter

    def train(plan: Plan, trial: Any, *, steps: int, config: ProxyConfig) -> float:
        from hptransfer.training import train_proxy

        result = train_proxy(
            choice.task,
            plan.width,
            config,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            callback=reporter(trial) if eval_every else None,
            eval_every=eval_every,
            factory=choice.factory,
            data_kwargs=data_kwargs,
            model_kwargs=model_kwargs,
        )
        return float(result.val_loss)  # inf when diverged: the wrapper marks the trial FAIL

    return train
