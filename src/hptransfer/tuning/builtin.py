"""Training functions for ``hptransfer tune``: the built-in proxies or a user's model factory,
trained by :func:`hptransfer.training.train_proxy` (imported lazily: torch loads only here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hptransfer.factories import ModelChoice, resolve_model
from hptransfer.scaling import Plan, ProxyConfig

__all__ = ["ModelChoice", "builtin_trainer", "resolve_model"]


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
