"""Built-in datasets, generated locally or read from Python's own stdlib sources (no download).

* ``"charlm"``: next-byte prediction on standard-library source files (:class:`CharLM`).
* ``"regression"``: a random teacher network plus noise (:class:`TeacherRegression`).

Every dataset has ``batch(batch_size, generator)``, ``val_set()`` and ``loss(output, target)``.

Example:
    >>> from hptransfer.data import load_task
    >>> data = load_task("charlm", seq_len=32, train_tokens=20_000)
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from hptransfer.data.synthetic import TeacherRegression
from hptransfer.data.text import STDLIB_FILES, VOCAB_SIZE, CharLM, stdlib_text

__all__ = [
    "STDLIB_FILES",
    "TASKS",
    "VOCAB_SIZE",
    "CharLM",
    "Dataset",
    "TeacherRegression",
    "load_task",
    "stdlib_text",
]


class Dataset(Protocol):
    """What the training loop needs from a task's data."""

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...

    def val_set(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


# task name -> (dataset class, built-in model name)
TASKS: dict[str, tuple[type, str]] = {
    "charlm": (CharLM, "llama"),
    "regression": (TeacherRegression, "mlp"),
}


def load_task(name: str, **kwargs: Any) -> Dataset:
    """The dataset of built-in task ``name``; ``kwargs`` go to its class."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name][0](**kwargs)
