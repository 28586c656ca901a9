"""Print one of README.md's set-up commands: ``python3 .ci/readme_command.py setup|test``.

The command is the ```bash block right after the ``<!-- ci:NAME ...-->`` marker, so `.ci/run`
runs exactly what a newcomer copies from the README.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(name: str, text: str | None = None) -> str:
    text = README.read_text() if text is None else text
    match = re.search(rf"<!-- ci:{re.escape(name)}\b[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    if match is None:
        raise SystemExit(f"README.md has no ```bash block after <!-- ci:{name} -->")
    return match.group(1).strip()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(readme_command(sys.argv[1]))
