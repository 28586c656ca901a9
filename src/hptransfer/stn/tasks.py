"""STN's view of the built-in tasks, and plain training at fixed hyperparameters.

The tasks themselves live in the one registry, :data:`hptransfer.data.TASKS`; the ones set up
for regularisation tuning (a test split, something to overfit, default hyperparameters) are

* ``classify``: 10-class classification, 32 Gaussian features, labels sampled from a random
  teacher network's softmax (noisy labels), 256 training examples; an MLP with dropout.
* ``regression-small``: :class:`hptransfer.data.TeacherRegression` with 128 training points and
  noise 0.5; an MLP with dropout and MSE loss (called ``regression`` here before the registries
  merged; ``regression`` is now the proxy task with 8192 points and no STN defaults).
* ``glyphs``: :class:`hptransfer.data.images.GlyphImages`, 300 generated 16×16 glyph images of 10
  classes; a small CNN; its data augmentation's strength is the ``augment`` hyperparameter
  (``train_fixed`` trains on ``data.with_augment(value)``; the tuner takes ``data.augment_with``).

:func:`make_task` materialises one as a :class:`Task` (tensors, model factory, loss name, defaults).
:func:`train_fixed` trains the plain model at fixed hyperparameter values through the one training
loop (:func:`hptransfer.training.train` with ``regularizers``, epochs as steps), with exactly the
regularisers the STN tuner applies (same names: ``l2`` adds ``c/2 ||W||^2`` to the loss,
``weight_decay`` is AdamW's decoupled decay; both on Linear/Conv2d weights), so a run of
:class:`~hptransfer.stn.tuner.StnTuner` and a search over fixed values (Optuna, random search)
optimise the same objective.

Example:
    >>> task = make_task("classify", seed=0)
    >>> out = train_fixed(task, {"dropout": 0.3}, epochs=1)
    >>> sorted(out)
    ['test_loss', 'train_loss', 'val_loss']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hptransfer.data import TASKS, Dataset, DropoutMLP, get_task
from hptransfer.stn.hyper import HyperSpec
from hptransfer.stn.tuner import adam_kwargs
from hptransfer.training import epoch_steps, evaluate, train

__all__ = ["DropoutMLP", "Task", "make_task", "stn_tasks", "train_fixed"]


@dataclass
class Task:
    """A registry task materialised for STN: data splits, a model factory, the loss name and
    sensible hyperparameter ranges (``data`` is the dataset the splits come from)."""

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    make_model: Callable[[], nn.Module]
    loss: str
    width: int
    batch_size: int = 32
    lr: float = 1e-3
    default_hypers: list[HyperSpec] = field(default_factory=list)
    description: str = ""
    data: Dataset | None = None


def stn_tasks() -> tuple[str, ...]:
    """Names of the registry tasks set up for STN and fixed-hyperparameter runs."""
    return tuple(name for name, spec in TASKS.items() if spec.hypers)


def make_task(name: str, seed: int = 0, *, width: int | None = None, **kwargs: Any) -> Task:
    """Registry task ``name`` (``classify`` or ``regression-small``) generated from ``seed``;
    ``width`` sets the built-in model's width, ``kwargs`` go to the dataset (``n_train``, ...)."""
    choices = ", ".join(stn_tasks())
    if name == "regression":
        raise ValueError(
            "task 'regression' (the 8192-point proxy task) has no STN setup; "
            "STN's regression task is now 'regression-small'"
        )
    try:
        spec = get_task(name)
    except ValueError:
        raise ValueError(f"unknown task {name!r}; choose one of: {choices}") from None
    if not spec.hypers:
        raise ValueError(
            f"task {name!r} is not set up for STN (no default hyperparameters); choose one of: {choices}"
        )
    data = spec.load(seed=seed, **kwargs)
    w = spec.width if width is None else width
    splits = {s: getattr(data, f"{s}_set")() for s in ("train", "val", "test")}
    return Task(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        make_model=lambda: spec.build_model(w),
        loss=str(getattr(data, "loss_name", "")),
        width=w,
        batch_size=spec.batch_size,
        lr=spec.lr,
        default_hypers=[HyperSpec(n, init, lo, hi) for n, init, lo, hi in spec.hypers],
        description=spec.description,
        data=data,
    )


def train_fixed(
    task: Task,
    values: Mapping[str, float],
    *,
    epochs: int,
    seed: int = 0,
    lr: float | None = None,
    model: nn.Module | None = None,
) -> dict[str, float]:
    """Train the task's plain model at fixed hyperparameter ``values`` (names as for the tuner)
    for ``epochs`` passes over the training set: :func:`hptransfer.training.train` with
    ``regularizers=values``, ``shuffle=True`` and Adam(W) at ``lr`` (default the task's).

    ``seed`` seeds torch's global generator, which draws the initial weights, the epoch
    permutations, dropout and input noise (one stream, as before the loops merged).

    Returns the final training, validation and test losses (unregularised, eval mode; all ``inf``
    when the loss diverged).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    data = task.data
    if data is None:
        raise ValueError(f"task {task.name!r} has no dataset; build it with make_task")
    values = dict(values)
    if "augment" in values:  # a data-side hyperparameter: the dataset augments its training batches
        with_augment = getattr(data, "with_augment", None)
        if with_augment is None:
            raise ValueError(f"augment: task {task.name!r} has no augmentation to scale")
        data = with_augment(float(values.pop("augment")))
    torch.manual_seed(seed)
    model = task.make_model() if model is None else model
    device = next(model.parameters()).device
    res = train(
        model,
        None,
        None,
        data,
        steps=epochs * epoch_steps(data, task.batch_size),
        batch_size=task.batch_size,
        seed=None,
        shuffle=True,
        regularizers=dict(values),
        lr=lr or task.lr,
        optimizer_kwargs=adam_kwargs(device),
        device=device,
        width=task.width,
    )
    if res.diverged:
        return {"train_loss": math.inf, "val_loss": math.inf, "test_loss": math.inf}
    return {
        "train_loss": evaluate(model, data, split="train", device=device),
        "val_loss": res.val_loss,
        "test_loss": evaluate(model, data, split="test", device=device),
    }
