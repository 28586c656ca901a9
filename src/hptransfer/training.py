"""The proxy training loop: build, parametrize through the torch adapter, train with AdamW.

Built-in models go through exactly the path a user model does: classify against the same
model built on the meta device at another width, apply init and multipliers for the plan,
AdamW over :func:`~hptransfer.scaling.torch_adapter.param_groups`.

Example:
    >>> from hptransfer.models import builtin_config
    >>> from hptransfer.training import train_proxy
    >>> res = train_proxy("regression", 64, builtin_config("mlp"), steps=20)  # doctest: +SKIP
    >>> res.val_loss, res.diverged                                              # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hptransfer.data import TASKS, Dataset, load_task
from hptransfer.models import build_model
from hptransfer.scaling import Plan, ProxyConfig, suggest
from hptransfer.scaling.torch_adapter import ParamTable, param_groups, parametrize

__all__ = ["SCHEDULES", "TrainResult", "evaluate", "get_data", "lr_lambda", "train", "train_proxy"]

SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class TrainResult:
    """One training run. ``val_loss`` is ``inf`` when the run diverged (NaN/inf loss)."""

    width: int
    val_loss: float
    train_losses: list[float]
    diverged: bool
    model: nn.Module
    steps: int
    val_history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


_DATA_CACHE: dict[tuple[Any, ...], Dataset] = {}


def get_data(task: str, **kwargs: Any) -> Dataset:
    """``load_task(task, **kwargs)``, cached in memory (sweeps train many runs on one dataset)."""
    key = (task, tuple(sorted(kwargs.items())))
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) > 8:
            _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_task(task, **kwargs)
    return _DATA_CACHE[key]


def lr_lambda(schedule: str, steps: int, warmup: int = 0) -> Callable[[int], float]:
    """Multiplicative lr factor per step (for ``LambdaLR``): linear warmup, then constant,
    cosine or linear decay to zero. Multiplicative, so every group keeps its rule share."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac

    return factor


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, *, batch_size: int = 128, device: str | torch.device = "cpu"
) -> float:
    """Mean loss over the dataset's fixed validation set (``inf`` if not finite)."""
    was_training = model.training
    model.eval()
    x_all, y_all = data.val_set()
    total, count = 0.0, 0
    for i in range(0, x_all.shape[0], batch_size):
        x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
        n = x.shape[0]
        total += float(data.loss(model(x), y)) * n
        count += n
    model.train(was_training)
    value = total / max(count, 1)
    return value if math.isfinite(value) else math.inf


def train(
    model: nn.Module,
    plan: Plan | None,
    table: ParamTable | None,
    data: Dataset,
    *,
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
    eval_every: int | None = None,
    schedule: str = "constant",
    warmup: int = 0,
    device: str | torch.device = "cpu",
    optimizer_kwargs: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    width: int | None = None,
) -> TrainResult:
    """Train an already parametrized ``model`` with AdamW over ``param_groups(model, plan, table)``.

    ``optimizer`` replaces that AdamW (e.g. a baseline's own optimizer; then ``plan`` and
    ``table`` may be None and ``width`` names the run's width).

    Stops early with ``diverged=True`` and ``val_loss=inf`` on a NaN/inf loss; never raises for
    divergence. ``callback(step, val_loss)`` runs every ``eval_every`` steps; its exceptions
    (e.g. ``optuna.TrialPruned``) propagate.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    start = time.perf_counter()
    model.to(device)
    model.train()
    if optimizer is not None:
        opt = optimizer
    elif plan is not None and table is not None:
        opt = torch.optim.AdamW(
            param_groups(model, plan, table), lr=plan.base_lr, **dict(optimizer_kwargs or {})
        )
    else:
        raise ValueError("train() needs plan and table, or an optimizer")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule, steps, warmup))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    history: list[tuple[int, float]] = []
    diverged = False
    for step in range(1, steps + 1):
        x, y = data.batch(batch_size, gen)
        x, y = x.to(device), y.to(device)
        loss = data.loss(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
            break
        losses.append(value)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if eval_every and step % eval_every == 0 and step < steps:
            val = evaluate(model, data, device=device)
            history.append((step, val))
            if callback is not None:
                callback(step, val)
            if math.isinf(val):
                diverged = True
                break
    val_loss = math.inf if diverged else evaluate(model, data, device=device)
    if math.isinf(val_loss):
        diverged = True
    elif eval_every:
        history.append((len(losses), val_loss))
        if callback is not None and len(losses) % eval_every == 0:
            callback(len(losses), val_loss)
    return TrainResult(
        width=plan.width if plan is not None else int(width or 0),
        val_loss=val_loss,
        train_losses=losses,
        diverged=diverged,
        model=model,
        steps=len(losses),
        val_history=history,
        seconds=time.perf_counter() - start,
    )


def train_proxy(
    task: str,
    width: int,
    config: ProxyConfig,
    *,
    rule: str | None = None,
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
    eval_every: int | None = None,
    factory: Callable[[int], nn.Module] | None = None,
    data: Dataset | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    schedule: str = "constant",
    warmup: int = 0,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train the proxy of ``task`` at ``width`` with ``config``'s base hyperparameters carried
    there by ``rule`` (default: the config's rule).

    Args:
        task: "charlm" (the llama on stdlib bytes) or "regression" (the MLP on a teacher task).
        width: model width.
        config: base width, base lr/wd/init and rule.
        factory: ``factory(width) -> nn.Module`` replaces the built-in model (it must accept
            the task's inputs); it is classified against ``factory`` at another width.
        data / data_kwargs: the dataset, or arguments for the built-in one (e.g.
            ``{"train_tokens": 50_000}`` for a small training set).
        model_kwargs: arguments for the built-in model (depth, seq_len, …).
        seed: model init and batch order (the data split has its own seed in ``data_kwargs``).

    Returns:
        A :class:`TrainResult`; a NaN/inf loss gives ``diverged=True``, ``val_loss=inf``.

    Raises:
        ConfigError / WidthError: a width the config cannot take.
        ClassificationError: a factory whose parameters do not change with width.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    plan = suggest(config, width, rule)
    model_name = TASKS[task][1]
    mkw = dict(model_kwargs or {})
    if data is None:
        dkw = dict(data_kwargs or {})
        if task == "charlm":
            dkw.setdefault("seq_len", mkw.get("seq_len", 64))
        data = get_data(task, **dkw)
    if factory is None:

        def factory(w: int) -> nn.Module:
            return build_model(model_name, w, suggest(config, w, rule), **mkw)

        attention_handled = True
    else:
        attention_handled = False
    torch.manual_seed(seed)
    model = factory(plan.width)
    # A user's factory gets the plan's attention scale (attn_mult is tuned) written into its
    # scaled_dot_product_attention calls; the built-ins pass plan.attention_scale themselves.
    table = parametrize(model, plan, factory, attention="ignore" if attention_handled else "apply")
    return train(
        model,
        plan,
        table,
        data,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        callback=callback,
        eval_every=eval_every,
        schedule=schedule,
        warmup=warmup,
        device=device,
    )
