"""Built-in tasks: datasets generated locally or read from Python's own stdlib sources (no download),
and the one task registry (:data:`TASKS`, in :mod:`hptransfer.data.tasks`).

* ``"charlm"``: next-byte prediction on standard-library source files (:class:`CharLM`), LLaMA proxy.
* ``"regression"``: a random teacher network plus noise (:class:`TeacherRegression`), MLP proxy.
* ``"classify"``: noisy-label classification, 256 examples (:class:`NoisyClassification`),
  dropout MLP; STN's default task.
* ``"regression-small"``: the teacher regression with 128 points and noise 0.5, dropout MLP (STN's
  regression task; it was called ``"regression"`` in the STN command before the registries merged).

Every dataset has ``batch(batch_size, generator)``, ``val_set()`` and ``loss(output, target)``.

Example:
    >>> from hptransfer.data import load_task
    >>> data = load_task("charlm", seq_len=32, train_tokens=20_000)
"""

from __future__ import annotations

from hptransfer.data.synthetic import NoisyClassification, TeacherRegression
from hptransfer.data.tasks import TASKS, Dataset, DropoutMLP, TaskSpec, dropout_mlp, get_task, load_task
from hptransfer.data.text import STDLIB_FILES, VOCAB_SIZE, CharLM, stdlib_text

__all__ = [
    "STDLIB_FILES",
    "TASKS",
    "VOCAB_SIZE",
    "CharLM",
    "Dataset",
    "DropoutMLP",
    "NoisyClassification",
    "TaskSpec",
    "TeacherRegression",
    "dropout_mlp",
    "get_task",
    "load_task",
    "stdlib_text",
]
