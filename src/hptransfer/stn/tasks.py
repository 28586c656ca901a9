"""Built-in tasks that overfit without regularisation, and plain training at fixed hyperparameters.

Tasks (all generated locally from a seed; train / validation / test splits):

* ``classify``: 10-class classification, 32 Gaussian features, labels sampled from a random
  teacher network's softmax (noisy labels), 256 training examples; an MLP with dropout.
* ``regression``: :class:`hptransfer.data.TeacherRegression` with 128 training points; an MLP with
  dropout and MSE loss.

:func:`train_fixed` trains the plain model at fixed hyperparameter values with exactly the
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

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from hptransfer.stn.hyper import HyperSpec, base_name
from hptransfer.stn.layers import l2_term
from hptransfer.stn.tuner import adam_kwargs

__all__ = ["TASKS", "Task", "make_task", "train_fixed"]


class DropoutMLP(nn.Module):
    """``depth`` Linear layers of ``width`` units, ReLU and dropout between them."""

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


@dataclass
class Task:
    """Data splits, a model factory, the loss name and sensible hyperparameter ranges."""

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


def _classify(
    seed: int,
    n_train: int = 256,
    n_val: int = 1024,
    n_test: int = 4096,
    d_in: int = 32,
    classes: int = 10,
    width: int = 256,
) -> Task:
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d_in, 64, generator=g) / math.sqrt(d_in)
    w2 = torch.randn(64, classes, generator=g) / math.sqrt(64)
    n = n_train + n_val + n_test
    x = torch.randn(n, d_in, generator=g)
    logits = 4.0 * torch.tanh(2.0 * x @ w1) @ w2
    y = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g).squeeze(1)
    a, b = n_train, n_train + n_val
    return Task(
        name="classify",
        train=(x[:a], y[:a]),
        val=(x[a:b], y[a:b]),
        test=(x[b:], y[b:]),
        make_model=lambda: DropoutMLP(d_in, width, classes),
        loss="cross_entropy",
        width=width,
        default_hypers=[
            HyperSpec("dropout", 0.1, 0.0, 0.9),
            HyperSpec("l2", 1e-3, 1e-6, 1.0),
            HyperSpec("input_noise", 0.05, 1e-3, 2.0),
            HyperSpec("label_smoothing", 0.05, 0.0, 0.5),
        ],
        description=f"{classes}-class noisy-teacher classification, {n_train} training examples",
    )


def _regression(
    seed: int, n_train: int = 128, n_val: int = 1024, n_test: int = 4096, d_in: int = 16, width: int = 256
) -> Task:
    from hptransfer.data import TeacherRegression

    data = TeacherRegression(d_in=d_in, n_train=n_train, n_val=n_val + n_test, noise=0.5, seed=seed)
    vx, vy = data.val_x, data.val_y
    return Task(
        name="regression",
        train=(data.train_x, data.train_y),
        val=(vx[:n_val], vy[:n_val]),
        test=(vx[n_val:], vy[n_val:]),
        make_model=lambda: DropoutMLP(d_in, width, 1),
        loss="mse",
        width=width,
        default_hypers=[
            HyperSpec("dropout", 0.1, 0.0, 0.9),
            HyperSpec("l2", 1e-3, 1e-6, 1.0),
            HyperSpec("input_noise", 0.05, 1e-3, 2.0),
        ],
        description=f"teacher-network regression (noise 0.5), {n_train} training points",
    )


TASKS: dict[str, Callable[..., Task]] = {"classify": _classify, "regression": _regression}


def make_task(name: str, seed: int = 0, **kwargs: int) -> Task:
    """Built-in task ``name`` (``classify`` or ``regression``), generated from ``seed``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name](seed, **kwargs)


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    if kind == "cross_entropy":
        return F.cross_entropy(out, y, label_smoothing=smoothing)
    return F.mse_loss(out, y)


def train_fixed(
    task: Task,
    values: Mapping[str, float],
    *,
    epochs: int,
    seed: int = 0,
    lr: float | None = None,
    model: nn.Module | None = None,
) -> dict[str, float]:
    """Train the task's plain model at fixed hyperparameter ``values`` (names as for the tuner).

    Returns the final training, validation and test losses (unregularised, eval mode).
    """
    torch.manual_seed(seed)
    model = task.make_model() if model is None else model
    modules = dict(model.named_modules())
    for name in values:
        base = base_name(name)
        if base not in ("dropout", "l2", "weight_decay", "input_noise", "input_mask", "label_smoothing"):
            raise ValueError(f"train_fixed: unknown hyperparameter {name!r}")
        if "." in name and name.split(".", 1)[1] not in modules:
            raise ValueError(f"train_fixed: {name!r} names no module of the model")
    for path, mod in modules.items():
        if isinstance(mod, nn.Dropout):
            mod.p = float(values.get(f"dropout.{path}", values.get("dropout", mod.p)))
    wd: list[tuple[float, torch.Tensor]] = []
    decayed: dict[int, float] = {}  # AdamW weight decay per parameter (Linear/Conv2d weights)
    for path, mod in modules.items():
        matrix = isinstance(mod, (nn.Linear, nn.Conv2d))
        if matrix or (f"l2.{path}" in values):
            coef = values.get(f"l2.{path}", values.get("l2", 0.0) if matrix else 0.0)
            if coef:
                wd.append((float(coef), mod.weight))  # type: ignore[arg-type]
        if matrix or (f"weight_decay.{path}" in values):
            coef = values.get(f"weight_decay.{path}", values.get("weight_decay", 0.0) if matrix else 0.0)
            if coef:
                decayed[id(mod.weight)] = float(coef)
    noise = float(values.get("input_noise", 0.0))
    mask = float(values.get("input_mask", 0.0))
    smoothing = float(values.get("label_smoothing", 0.0))
    params = list(model.parameters())
    groups: dict[float, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault(decayed.get(id(p), 0.0), []).append(p)
    opt = torch.optim.AdamW(
        [{"params": ps, "weight_decay": c} for c, ps in groups.items()],
        lr=lr or task.lr,
        **adam_kwargs(params[0].device),
    )
    x, y = task.train
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n)
        model.train()
        for i in range(0, n, task.batch_size):
            idx = order[i : i + task.batch_size]
            xb, yb = x[idx], y[idx]
            if noise:
                xb = xb + noise * torch.randn_like(xb)
            if mask:
                k = math.floor(mask) + int(float(torch.rand(())) < mask - math.floor(mask))
                if k:
                    keep = torch.rand(xb.shape).argsort(dim=1).argsort(dim=1) >= k
                    xb = xb * keep
            loss = _loss(task.loss, model(xb), yb, smoothing)
            if wd:
                loss = loss + sum(l2_term(w, c) for c, w in wd)
            if not torch.isfinite(loss):
                return {"train_loss": math.inf, "val_loss": math.inf, "test_loss": math.inf}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return {
            split: float(_loss(task.loss, model(data[0]), data[1]))
            for split, data in (("train_loss", task.train), ("val_loss", task.val), ("test_loss", task.test))
        }
