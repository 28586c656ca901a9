"""Smoke run of benchmarks/optuna_transfer.py: it runs end to end and its last line is the figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optuna_transfer.py"


def test_optuna_transfer_benchmark_quick(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--figures", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.match(
        r"^transfer 16->64: regret [+-]\d+\.\d\d% \(target <= 1%\), tuning \d+\.\dx cheaper, "
        r"wrapper overhead -?\d+\.\d\d% a trial \(target < 1%\)$",
        last,
    ), last
    for stem in ("optuna_transfer", "optuna_history", "optuna_slice"):
        assert (tmp_path / f"{stem}.png").exists() and (tmp_path / f"{stem}.svg").exists()
