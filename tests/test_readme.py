"""The README's promises: the two set-up commands, and Python examples that run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
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


def test_readme_suggest_output_is_what_suggest_prints() -> None:
    """Every ```console block of `hptransfer suggest …` in the README shows lines the command
    really prints (80 columns, as a terminal of that width would)."""
    blocks = [b for b in _blocks("console") if b.startswith("$ hptransfer suggest")]
    assert blocks, "the README shows no `hptransfer suggest` output"
    for block in blocks:
        command, *shown = block.rstrip("\n").splitlines()
        args = shlex.split(command.removeprefix("$ hptransfer "))
        code = "import sys\nfrom hptransfer.cli.entry import main\nmain(sys.argv[1:])\n"
        env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert proc.returncode == 0, proc.stderr
        printed = [line.rstrip() for line in proc.stdout.splitlines()]
        missing = [line for line in shown if line.rstrip() not in printed]
        assert not missing, f"{command}: README lines not printed: {missing}"
