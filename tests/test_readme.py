"""The README's promises: the two set-up commands, and Python examples that run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_set_up_commands_verbatim() -> None:
    """.ci/run reads the two set-up commands out of the README, runs them first in a fresh venv, and
    runs the test command again after installing the extras."""
    import subprocess
    import sys

    setup, test = _blocks("bash")[:2]
    assert "hptransfer suggest --width 4096" in setup and "torch==2.13.0" in setup
    got = [
        subprocess.run(
            [sys.executable, str(ROOT / ".ci" / "readme_command.py"), name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for name in ("setup", "test")
    ]
    assert got == [setup.strip(), test.strip()]
    ci = (ROOT / ".ci" / "run").read_text()
    for line in (
        'SETUP="$(python3 .ci/readme_command.py setup)"',
        'TESTS="$(python3 .ci/readme_command.py test)"',
        'python3 -m venv "$VENV"',
    ):
        assert line in ci.splitlines()
    # order: fresh venv, README setup, README tests, then extras, then lint/types/tests again
    order = ["python3 -m venv", 'eval "$SETUP"', "run_tests\n", "'.[dev,postgres,foreign]'", "mypy\n"]
    positions = [ci.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert ci.count("\nrun_tests\n") == 2


def test_python_examples_run_or_compile() -> None:
    blocks = _blocks("python")
    assert blocks
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README example 1", "exec"), namespace)  # the model-wrapping example
    optimizer = namespace["optimizer"]
    assert len(optimizer.param_groups) == 2  # type: ignore[attr-defined]
    for i, block in enumerate(blocks[1:], start=2):  # snippets that need the user's own train()
        compile(block, f"README example {i}", "exec")
