"""``MODULE:FACTORY`` specs: a user's model factory, ``FACTORY(width) -> torch.nn.Module``.

Torch-free (the user's module may import torch; loading it is the caller's choice).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from hptransfer.scaling import ConfigError

__all__ = ["load_factory"]


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
