"""The task registry: one place that maps a task name to its data, built-in model and defaults.

Every consumer reads it: :func:`hptransfer.training.train_proxy` (and through it sweeps, tuning
and diagnostics) builds ``TASKS[name].model`` on ``load_task(name)``; the STN tuner and
fixed-hyperparameter runs (:func:`hptransfer.stn.make_task`) take the same entry's splits, model,
width, lr and default regularisation hyperparameters.

Adding a task is one entry in :data:`TASKS`: a dataset class (``batch``, ``val_set``, ``loss``; with
``train_set``/``test_set`` and a ``hypers`` tuple it also serves STN and epoch runs) and a model
builder ``model(width, plan, **model_kwargs)``.

Example:
    >>> from hptransfer.data import TASKS, load_task
    >>> spec = TASKS["classify"]
    >>> data = load_task("classify", n_train=64)
    >>> spec.build_model(spec.width)(data.train_set()[0]).shape
    torch.Size([64, 10])
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from hptransfer.data.images import GlyphImages, glyph_cnn
from hptransfer.data.synthetic import NoisyClassification, TeacherRegression
from hptransfer.data.text import CharLM
from hptransfer.models import build_model

__all__ = ["TASKS", "Dataset", "DropoutMLP", "TaskSpec", "dropout_mlp", "get_task", "load_task"]


class Dataset(Protocol):
    """What the training loop needs from a task's data.

    Optional, used when present: ``train_set()`` / ``test_set()`` (the fixed splits as tensors:
    epoch runs and STN need ``train_set``), ``augment(x, y, generator) -> (x, y)`` (applied by the
    training loop to every training batch, however it was drawn), ``loss_name``
    (``"cross_entropy"`` or ``"mse"``, for the STN tuner) and a ``label_smoothing`` keyword of
    ``loss``. ``generator`` None means torch's global generator.
    """

    def batch(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def val_set(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


class DropoutMLP(nn.Module):
    """``depth`` Linear layers of ``width`` units, ReLU and dropout (rate ``p``) between them:
    the built-in model of the small tasks (``classify``, ``regression-small``), the one STN tunes.

    Example:
        >>> DropoutMLP(32, 64, 10)(torch.zeros(4, 32)).shape
        torch.Size([4, 10])
    """

    def __init__(self, d_in: int, width: int, d_out: int, depth: int = 3, p: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dims = [d_in] + [width] * (depth - 1)
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(p)]
        layers.append(nn.Linear(dims[-1], d_out))
        self.layers = nn.Sequential(*layers)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def dropout_mlp(
    width: int, plan: Any = None, *, d_in: int, d_out: int, depth: int = 3, p: float = 0.0
) -> nn.Module:
    """Model builder of :class:`DropoutMLP` (no attention: the plan is not needed to build it)."""
    return DropoutMLP(d_in, width, d_out, depth=depth, p=p)


@dataclass(frozen=True)
class TaskSpec:
    """One built-in task.

    Attributes:
        data: dataset class (or function); called with ``data_kwargs`` plus the caller's keywords
            (``seed`` seeds the split or the generated data).
        model: ``model(width, plan, **model_kwargs) -> nn.Module``, the task's built-in model.
        config: the built-in model whose proxy config (:func:`hptransfer.models.builtin_config`)
            runs on this task start from.
        description: one line for tables and help.
        data_kwargs / model_kwargs: the task's fixed arguments of ``data`` and ``model`` (sizes).
        width: default width of the built-in model for STN and fixed-hyperparameter runs.
        batch_size, lr: defaults of STN and fixed-hyperparameter runs (Adam lr of the weights).
        hypers: default regularisation hyperparameters ``(name, init, low, high)`` tuned by STN;
            empty for tasks not set up for STN (no test split, nothing to overfit).
    """

    data: Callable[..., Dataset]
    model: Callable[..., nn.Module]
    config: str
    description: str
    data_kwargs: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    width: int = 64
    batch_size: int = 32
    lr: float = 1e-3
    hypers: tuple[tuple[str, float, float, float], ...] = ()

    def load(self, **kwargs: Any) -> Dataset:
        """The dataset: ``data(**data_kwargs, **kwargs)``."""
        return self.data(**{**self.data_kwargs, **kwargs})

    def build_model(self, width: int, plan: Any = None, **overrides: Any) -> nn.Module:
        """The built-in model at ``width``: ``model(width, plan, **model_kwargs, **overrides)``."""
        return self.model(width, plan, **{**self.model_kwargs, **overrides})


_REG = (("dropout", 0.1, 0.0, 0.9), ("l2", 1e-3, 1e-6, 1.0), ("input_noise", 0.05, 1e-3, 2.0))

TASKS: dict[str, TaskSpec] = {
    "charlm": TaskSpec(
        CharLM,
        functools.partial(build_model, "llama"),
        "llama",
        "next-byte prediction on Python standard-library sources (LLaMA-style proxy)",
    ),
    "regression": TaskSpec(
        TeacherRegression,
        functools.partial(build_model, "mlp"),
        "mlp",
        "teacher-network regression (noise 0.1), 8192 training points (MLP proxy)",
    ),
    "classify": TaskSpec(
        NoisyClassification,
        dropout_mlp,
        "mlp",
        "10-class noisy-teacher classification, 256 training examples",
        model_kwargs={"d_in": 32, "d_out": 10},
        width=256,
        hypers=(*_REG, ("label_smoothing", 0.05, 0.0, 0.5)),
    ),
    "regression-small": TaskSpec(
        TeacherRegression,
        dropout_mlp,
        "mlp",
        "teacher-network regression (noise 0.5), 128 training points",
        data_kwargs={"d_in": 16, "n_train": 128, "n_val": 1024, "n_test": 4096, "noise": 0.5},
        model_kwargs={"d_in": 16, "d_out": 1},
        width=256,
        hypers=_REG,
    ),
    "glyphs": TaskSpec(
        GlyphImages,
        glyph_cnn,
        "mlp",
        "10-class 16x16 glyph images (random rotation, scale, shift, noise), 300 training images; "
        "a small CNN, tunable augmentation strength",
        width=16,
        hypers=(("dropout", 0.1, 0.0, 0.9), ("l2", 1e-4, 1e-6, 1.0), ("augment", 0.2, 0.0, 1.5)),
    ),
}


def get_task(name: str) -> TaskSpec:
    """The registry entry of ``name``; a ValueError naming the choices for an unknown one."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def load_task(name: str, **kwargs: Any) -> Dataset:
    """The dataset of built-in task ``name``; ``kwargs`` go to its class (over the task's own)."""
    return get_task(name).load(**kwargs)
