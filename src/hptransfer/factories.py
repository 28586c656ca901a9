"""``--model`` arguments: a built-in model name, or ``MODULE:FACTORY`` (a user's model factory,
``FACTORY(width) -> torch.nn.Module``), resolved once for every command that trains
(``tune``, ``diagnose``, ``sweep``).

Torch-free at import (the user's module may import torch; :func:`resolve_model` loads the
built-in models and tasks, and so torch, when it is called).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hptransfer.scaling import ConfigError, ProxyConfig

__all__ = ["ModelChoice", "load_factory", "resolve_model"]

# Names people type for the built-in models: their tasks, and a short one.
_ALIASES = {"charlm": "llama", "lm": "llama", "regression": "mlp"}


@dataclass(frozen=True)
class ModelChoice:
    """What a ``--model`` argument resolved to.

    Attributes:
        name: the built-in model (``llama``, ``mlp``), the ``MODULE:FACTORY`` spec, or the
            callable's name.
        task: the task its runs train on (a key of :data:`hptransfer.data.TASKS`).
        factory: ``factory(width) -> nn.Module``; None for a built-in model, which is built per
            plan (:func:`hptransfer.models.build_model`).
        config: the proxy config runs start from.
    """

    name: str
    task: str
    factory: Callable[[int], Any] | None
    config: ProxyConfig

    @property
    def builtin(self) -> str | None:
        """The built-in model's name, or None for a user's factory."""
        return self.name if self.factory is None else None


def resolve_model(
    model: str | Callable[[int], Any], *, task: str | None = None, config: ProxyConfig | None = None
) -> ModelChoice:
    """A built-in model (``llama``, ``mlp``, or their tasks' names ``charlm``, ``regression``),
    ``MODULE:FACTORY`` or a callable taking the width, as a :class:`ModelChoice`.

    A built-in model trains on its own task; a factory on ``task`` (default ``charlm``: it must
    take that task's inputs), starting from the config of the task's built-in model with the
    factory's own init kept. ``config`` replaces the default config.

    Raises:
        ConfigError: an unknown model or task, a built-in model with another task, or a factory
            that cannot be loaded.
    """
    from hptransfer.data import TASKS
    from hptransfer.models import BUILTIN_MODELS, builtin_config, builtin_task, factory_config

    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if isinstance(model, str) and ":" not in model:
        name = _ALIASES.get(model, model)
        if name not in BUILTIN_MODELS:
            raise ConfigError(
                f"unknown model {model!r}: give a built-in ({', '.join(BUILTIN_MODELS)}) or "
                "MODULE:FACTORY, where FACTORY(width) returns a torch module"
            )
        own_task = builtin_task(name)
        if task is not None and task != own_task:
            raise ConfigError(f"built-in model {name!r} trains on task {own_task!r}, not {task!r}")
        return ModelChoice(name, own_task, None, config or builtin_config(name))
    if isinstance(model, str):
        factory: Callable[[int], Any] = load_factory(model)
        label = model
    else:
        factory, label = model, getattr(model, "__name__", "factory")
    task = task or "charlm"
    return ModelChoice(label, task, factory, config or factory_config(TASKS[task].config, label))


def load_factory(spec: str) -> Callable[[int], Any]:
    """Import ``"package.module:callable"``; the current directory is importable.

    Raises:
        ConfigError: a malformed spec, a module that cannot be imported (missing, a syntax
            error, or an exception while importing it), a missing or non-callable attribute;
            the message names the spec and the fix.

    Example:
        >>> load_factory("hptransfer.models:MLP")  # doctest: +ELLIPSIS
        <class 'hptransfer.models.mlp.MLP'>
    """
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"--model {spec!r}: expected MODULE:FACTORY, e.g. mymodels:make_model")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"--model {spec!r}: cannot import module {mod_name!r} ({exc})") from None
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else mod_name
        raise ConfigError(f"--model {spec!r}: syntax error in {where}: {exc.msg}") from None
    except Exception as exc:  # the user's module raised while being imported
        raise ConfigError(
            f"--model {spec!r}: importing {mod_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"--model {spec!r}: module {mod_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise ConfigError(f"--model {spec!r}: {attr!r} is not callable")
    return factory
