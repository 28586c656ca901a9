"""The README's promises: the two set-up commands, and Python examples that run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    setup, test = _blocks("bash")[:2]
    assert "hptransfer suggest --width 4096" in setup and "torch==2.13.0" in setup
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test.strip() in ci_lines


def test_python_examples_run_or_compile() -> None:
    blocks = _blocks("python")
    assert blocks
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README example 1", "exec"), namespace)  # the model-wrapping example
    optimizer = namespace["optimizer"]
    assert len(optimizer.param_groups) == 2  # type: ignore[attr-defined]
    for i, block in enumerate(blocks[1:], start=2):  # snippets that need the user's own train()
        compile(block, f"README example {i}", "exec")
