"""The one training loop: proxy runs, sweeps, diagnostics, tuning and fixed-hyperparameter runs.

:func:`train` trains a model for a number of steps: random batches (with replacement) or epochs
(``shuffle=True``: a fresh permutation of the training set per pass; ``epoch_steps`` converts),
optionally with fixed regularisation hyperparameters (``regularizers``: dropout, l2, AdamW weight
decay per module, input noise / mask, label smoothing; named as for the STN tuner). It stops with
``diverged=True`` on a non-finite loss.

:func:`train_proxy` builds a task's model (:data:`hptransfer.data.TASKS`) at a width and trains
it with a config's hyperparameters carried there. Built-in models go through exactly the path a
user model does: classify against the same model built at another width, apply init and
multipliers for the plan, the plan's optimizer from
:func:`~hptransfer.scaling.torch_adapter.build_optimizer`.

Example:
    >>> from hptransfer.models import builtin_config
    >>> from hptransfer.training import train_proxy
    >>> res = train_proxy("regression", 64, builtin_config("mlp"), steps=20)  # doctest: +SKIP
    >>> res.val_loss, res.diverged                                              # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hptransfer.data import Dataset, get_task, load_task
from hptransfer.scaling import Plan, ProxyConfig, suggest
from hptransfer.scaling.torch_adapter import ParamTable, build_optimizer, parametrize

__all__ = [
    "REGULARIZERS",
    "SCHEDULES",
    "TrainResult",
    "epoch_steps",
    "evaluate",
    "get_data",
    "lr_lambda",
    "train",
    "train_proxy",
]

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


#: fixed regularisation hyperparameters :func:`train` applies (names as for the STN tuner)
REGULARIZERS = ("dropout", "l2", "weight_decay", "input_noise", "input_mask", "label_smoothing")


def _split(data: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    get = getattr(data, f"{split}_set", None)
    if split not in ("train", "val", "test") or get is None:
        raise ValueError(f"this dataset ({type(data).__name__}) has no {split!r} split")
    xy: tuple[torch.Tensor, torch.Tensor] = get()
    return xy


def epoch_steps(data: Dataset, batch_size: int) -> int:
    """Steps of one pass over the training set in batches of ``batch_size`` (the last one smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return -(-int(_split(data, "train")[0].shape[0]) // batch_size)


def _l2(w: torch.Tensor, coef: float) -> torch.Tensor:
    """``coef/2 ||w||^2`` with a one-op backward (as :func:`hptransfer.stn.layers.l2_term`)."""
    flat = w.reshape(-1)
    sq = torch.dot(flat, flat.detach())
    return coef * sq - (0.5 * coef) * sq.detach()


@dataclass
class _Regularizers:
    """Fixed regularisation hyperparameters bound to a model (dropout rates are set on it)."""

    l2: list[tuple[float, torch.Tensor]]
    decay: dict[int, float]  # AdamW weight decay per parameter id
    noise: float
    mask: float
    smoothing: float

    @classmethod
    def bind(cls, model: nn.Module, values: Mapping[str, float]) -> _Regularizers:
        modules = dict(model.named_modules())
        for name in values:
            if name.split(".", 1)[0] not in REGULARIZERS:
                raise ValueError(
                    f"unknown regularisation hyperparameter {name!r}; choose from: {', '.join(REGULARIZERS)}"
                )
            if "." in name and name.split(".", 1)[1] not in modules:
                raise ValueError(f"regularizers: {name!r} names no module of the model")
        for path, mod in modules.items():
            if isinstance(mod, nn.Dropout):
                mod.p = float(values.get(f"dropout.{path}", values.get("dropout", mod.p)))
        l2: list[tuple[float, torch.Tensor]] = []
        decay: dict[int, float] = {}  # default: on Linear/Conv2d weights
        for path, mod in modules.items():
            matrix = isinstance(mod, (nn.Linear, nn.Conv2d))
            if matrix or (f"l2.{path}" in values):
                coef = values.get(f"l2.{path}", values.get("l2", 0.0) if matrix else 0.0)
                if coef:
                    l2.append((float(coef), mod.weight))
            if matrix or (f"weight_decay.{path}" in values):
                coef = values.get(f"weight_decay.{path}", values.get("weight_decay", 0.0) if matrix else 0.0)
                if coef:
                    decay[id(mod.weight)] = float(coef)
        return cls(
            l2,
            decay,
            float(values.get("input_noise", 0.0)),
            float(values.get("input_mask", 0.0)),
            float(values.get("label_smoothing", 0.0)),
        )

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        groups: dict[float, list[torch.Tensor]] = {}
        for p in model.parameters():
            groups.setdefault(self.decay.get(id(p), 0.0), []).append(p)
        return [{"params": ps, "weight_decay": c} for c, ps in groups.items()]

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Input noise and masking (torch's global generator, as the STN tuner)."""
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        if self.mask:
            k = math.floor(self.mask) + int(float(torch.rand(())) < self.mask - math.floor(self.mask))
            if k:
                keep = torch.rand(x.shape).argsort(dim=1).argsort(dim=1) >= k
                x = x * keep.to(x.device)
        return x

    def penalty(self) -> torch.Tensor | None:
        if not self.l2:
            return None
        return sum((_l2(w, c) for c, w in self.l2[1:]), _l2(self.l2[0][1], self.l2[0][0]))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    split: str = "val",
) -> float:
    """Mean loss over one of the dataset's fixed splits (default validation; ``"train"`` and
    ``"test"`` need ``train_set()`` / ``test_set()``), in eval mode; ``inf`` if not finite."""
    x_all, y_all = _split(data, split)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, x_all.shape[0], batch_size):
        x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
        n = x.shape[0]
        total += float(data.loss(model(x), y)) * n
        count += n
    model.train(was_training)
    value = total / max(count, 1)
    return value if math.isfinite(value) else math.inf


def _batches(
    data: Dataset, batch_size: int, gen: torch.Generator | None, shuffle: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless training batches: random ones from ``data.batch``, or epochs over ``train_set()``
    (each pass a fresh permutation, drawn when the pass starts)."""
    if not shuffle:
        while True:
            yield data.batch(batch_size, gen)
    x, y = _split(data, "train")
    n = x.shape[0]
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]


def train(
    model: nn.Module,
    plan: Plan | None,
    table: ParamTable | None,
    data: Dataset,
    *,
    steps: int,
    batch_size: int = 32,
    seed: int | None = 0,
    callback: Callable[[int, float], None] | None = None,
    eval_every: int | None = None,
    schedule: str = "constant",
    warmup: int = 0,
    device: str | torch.device = "cpu",
    optimizer_kwargs: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    width: int | None = None,
    lr: float | None = None,
    shuffle: bool = False,
    regularizers: Mapping[str, float] | None = None,
) -> TrainResult:
    """Train ``model`` for ``steps`` steps and evaluate it on the validation split.

    The optimizer, first match: ``optimizer``; the plan's, ``build_optimizer(model, plan, table)``
    (an already parametrized model; AdamW, or Muon + AdamW under ``optimizer = "muon"``); plain
    AdamW at ``lr`` over the model's parameters (weight decay from ``regularizers``, else none).
    ``optimizer_kwargs`` go to that optimizer. ``width`` names the
    run's width when there is no plan.

    Args:
        seed: seeds the batch draws (random batches or epoch permutations); None draws them from
            torch's global generator (seed it yourself), as the regularisers' noise and dropout do.
        shuffle: False draws ``batch_size`` random examples per step (``data.batch``); True runs
            epochs over ``data.train_set()``: ``steps = epochs * epoch_steps(data, batch_size)``.
        regularizers: fixed values of :data:`REGULARIZERS` (names as for the STN tuner; a
            ``.<module path>`` suffix sets one module): ``dropout`` sets nn.Dropout rates,
            ``l2`` adds ``c/2 ||W||^2`` to the loss, ``weight_decay`` is AdamW's decoupled decay
            (plain AdamW only: with a plan the decay is the plan's), both on Linear/Conv2d weights
            by default; ``input_noise`` (Gaussian std), ``input_mask`` (inputs zeroed per
            example), ``label_smoothing`` (needs a loss with that keyword).

    Stops early with ``diverged=True`` and ``val_loss=inf`` on a NaN/inf loss; never raises for
    divergence. ``train_losses`` holds the unregularised training loss per step.
    ``callback(step, val_loss)`` runs every ``eval_every`` steps; its exceptions (e.g.
    ``optuna.TrialPruned``) propagate.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    model.to(device)
    model.train()
    regs = _Regularizers.bind(model, regularizers) if regularizers else None
    loss_kwargs: dict[str, float] = {}
    if regs is not None and regs.smoothing:
        if "label_smoothing" not in inspect.signature(data.loss).parameters:
            raise ValueError(f"label_smoothing needs a classification loss; {type(data).__name__} has none")
        loss_kwargs["label_smoothing"] = regs.smoothing
    if optimizer is not None:
        opt = optimizer
    elif plan is not None and table is not None:
        if regs is not None and regs.decay:
            raise ValueError(
                "weight_decay in regularizers needs a plain optimizer; with a plan the decay is the plan's"
            )
        opt = build_optimizer(model, plan, table, **dict(optimizer_kwargs or {}))
    elif lr is not None:
        no_decay = [{"params": list(model.parameters()), "weight_decay": 0.0}]
        groups = regs.param_groups(model) if regs is not None else no_decay
        opt = torch.optim.AdamW(groups, lr=lr, **dict(optimizer_kwargs or {}))
    else:
        raise ValueError("train() needs plan and table, an optimizer, or lr")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule, steps, warmup))
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    batches = _batches(data, batch_size, gen, shuffle)
    augment = getattr(data, "augment", None)
    losses: list[float] = []
    history: list[tuple[int, float]] = []
    diverged = False
    for step in range(1, steps + 1):
        x, y = next(batches)
        if augment is not None:
            x, y = augment(x, y, gen)
        x, y = x.to(device), y.to(device)
        if regs is not None:
            x = regs.inputs(x)
        loss = data.loss(model(x), y, **loss_kwargs)
        value = float(loss.detach())
        penalty = regs.penalty() if regs is not None else None
        if penalty is not None:
            loss = loss + penalty
        if not math.isfinite(value) or (penalty is not None and not math.isfinite(float(loss.detach()))):
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
        task: a task of :data:`hptransfer.data.TASKS` ("charlm": the llama on stdlib bytes,
            "regression": the MLP on a teacher task, ...); its built-in model is trained.
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
    spec = get_task(task)
    mkw = dict(model_kwargs or {})
    depth = mkw.get("depth") if config.base_depth is not None else None  # carried by its depth rule
    plan = suggest(config, width, rule, depth=depth)
    if data is None:
        dkw = dict(data_kwargs or {})
        if task == "charlm":
            dkw.setdefault("seq_len", mkw.get("seq_len", 64))
        data = get_data(task, **dkw)
    if factory is None:

        def factory(w: int) -> nn.Module:
            return spec.build_model(w, suggest(config, w, rule, depth=depth), **mkw)

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
