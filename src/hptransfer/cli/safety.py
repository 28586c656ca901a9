"""What the long-running commands share for faults: an output folder checked before training, the
exact command line that resumes after Ctrl-C, and one line (no traceback) for a full disk.

Import-light (no torch, no optuna at import time).
"""

from __future__ import annotations

import errno
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from typer.core import TyperGroup

from hptransfer.cli.common import fail

__all__ = ["OneLineUsageErrors", "check_out_dir", "command_line", "disk_error"]


def check_out_dir(path: Path | str | None, option: str = "--out") -> None:
    """Refuse an output folder that cannot be written, before any training (exit 2, one line).

    An existing file, a folder below a file, or a folder where a probe file cannot be created
    (read-only, full disk, no permission) is refused. Nothing is left behind: a missing folder is
    not created here, its nearest existing parent is probed instead.
    """
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        fail(f"{option} {p} is a file; give a folder (it is created if missing)")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        fail(f"{option} {p}: {probe} is a file, so no folder can be made below it; give another folder")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".hptransfer-probe-")
        try:
            os.write(fd, b"\0" * 4096)  # a full disk still lets an empty file be made
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        fail(f"{option} {p}: cannot write in {probe} ({exc.strerror or exc}); give a writable folder")


def command_line(
    drop: Sequence[str] = (), add: Mapping[str, object] | None = None, prog: str = "hptransfer"
) -> str:
    """The running command as a shell line, rebuilt from the options given on the command line.

    ``drop`` names parameters (Python names) to leave out; ``add`` maps option strings to values
    to append (e.g. ``{"--total-trials": 50}``). Options left at their defaults are left out, so
    the line is the user's, quoted for the shell.
    """
    ctx = _current_context()
    words = [prog, ctx.info_name or ""]
    for param in ctx.command.params:
        name = param.name
        if getattr(param, "param_type_name", "") != "option" or name is None or name in drop:
            continue
        source = ctx.get_parameter_source(name)
        if getattr(source, "name", None) != "COMMANDLINE":  # left at its default
            continue
        value = ctx.params.get(name)
        opt = max(param.opts, key=len)  # the long form
        if param.is_flag:
            if value:
                words.append(opt)
            elif param.secondary_opts:
                words.append(max(param.secondary_opts, key=len))
            continue
        for v in value if param.multiple and isinstance(value, list | tuple) else [value]:
            if v is not None:
                words += _pair(opt, v)
    for opt, v in (add or {}).items():
        words += _pair(opt, v)
    return shlex.join(words)


def _pair(opt: str, value: object) -> list[str]:
    text = str(value)
    return [f"{opt}={text}"] if text.startswith("-") else [opt, text]  # --grid=-10:-4 reads as a value


def _current_context() -> Any:
    """The running command's click context (typer ≥ 0.24 vendors click as ``typer._click``)."""
    import importlib

    for module in ("typer._click.globals", "click"):
        try:
            found = importlib.import_module(module).get_current_context(silent=True)
        except ImportError:
            continue
        if found is not None:
            return found
    raise RuntimeError("command_line() runs inside an hptransfer command only")


def disk_error(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` is (or wraps) a full or unwritable disk, else None."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            return f"{seen.strerror or os.strerror(seen.errno or 0)}"
        text = str(seen).lower()
        if "database or disk is full" in text or "no space left" in text:
            return "no space left on device"
        if "readonly database" in text or "read-only file system" in text:
            return "the disk or database is read-only"
        seen = seen.__cause__ or seen.__context__
    return None


def _is_usage_error(exc: Exception) -> bool:
    """click's usage errors (typer vendors click, so by shape): bad option values, missing or
    unknown options and commands. The bare ``hptransfer`` help screen is not one."""
    return (
        getattr(exc, "exit_code", None) == 2
        and hasattr(exc, "format_message")
        and type(exc).__name__ != "NoArgsIsHelpError"
    )


def _one_line(exc: Any) -> NoReturn:
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "hptransfer"
    fail(f"{' '.join(exc.format_message().split())} (see {where} --help)", 2)


class OneLineUsageErrors(TyperGroup):
    """The ``hptransfer`` group: a usage error (``--width abc``, a missing or unknown option) is
    one red line naming the fix's help page, like every other bad input, not click's usage text
    and boxed message."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:
            if _is_usage_error(exc):
                _one_line(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _is_usage_error(exc):
                _one_line(exc)
            raise
