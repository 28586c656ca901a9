"""The ``hptransfer`` console script.

``hptransfer suggest …`` with plain options runs without importing typer (or torch): typer and
the pydantic it pulls in cost several times Python's own start-up, and ``suggest`` is the command
people run most. Every other command line, and any ``suggest`` line the fast path does not read
exactly as typer would (``--help``, an unknown or malformed option), goes to the typer app.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``hptransfer`` on ``argv`` (default ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["suggest"]:
        from hptransfer.cli.suggest import fast_suggest

        if fast_suggest(args[1:]):
            return
    from hptransfer.cli.main import app

    app(args=args, prog_name="hptransfer")


if __name__ == "__main__":  # pragma: no cover
    main()
