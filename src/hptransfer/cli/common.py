"""Helpers every ``hptransfer`` command shares: the consoles, one-line errors, integer lists.

Import-light on purpose (rich only; no typer, no torch) so that the fast ``suggest`` path can
use it too. Command modules import from here, never from :mod:`hptransfer.cli.main`.
"""

from __future__ import annotations

from typing import NoReturn

from rich.console import Console
from rich.markup import escape

__all__ = ["console", "err_console", "fail", "parse_ints"]

# emoji=False: ":name:" in a user's path or study name is printed as written (and the emoji table
# is never loaded, which suggest's start-up notices).
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """One red line on stderr and exit ``code`` (2: bad input).

    ``message`` is plain text (brackets are shown as written, not read as rich markup). Raises
    :class:`SystemExit`, which typer/click and ``CliRunner`` turn into the exit code.
    """
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def parse_width(text: str | None, option: str) -> int | None:
    """A width as typed: digits only (``"16.0"``, ``"1e3"`` and ``"-4"`` are one red line).

    >>> parse_width("256", "--width")
    256
    """
    if text is None:
        return None
    body = text.strip()
    if not (body.isascii() and body.isdigit()) or int(body) < 1:
        fail(f"{option} must be a positive integer, got {text!r}")
    return int(body)


def parse_ints(text: str, option: str) -> list[int]:
    """``"128, 256,512"`` -> ``[128, 256, 512]``; anything else is one red line naming the option.

    >>> parse_ints("128, 256,512", "--widths")
    [128, 256, 512]
    """
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            fail(f"{option}: {part!r} is not an integer; give a comma-separated list like 128,256,512")
    return out
