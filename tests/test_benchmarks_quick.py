"""Smoke runs of the foundation benchmarks: they run, and their last line is the figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    ("script", "last_line"),
    [
        ("cold_start.py", r"^suggest cold start: \d+\.\d+ s \(target < 0\.5 s\), \d+\.\dx"),
        ("optimizer_step.py", r"^optimizer step at width \d+: hptransfer groups \d\.\d+x hand-made"),
        (
            "wd_length.py",
            r"^wd optimum drift over \d+-\d+ steps \(\d+x\): timescale rule \d+\.\d\d, fixed wd",
        ),
        (
            "depth.py",
            r"^depth drift \(max-min log2 lr\*, depths \d+\.\.\d+, width \d+\): completep \d+\.\d\d "
            r"\(target <= 0\.5\); sp = mup \d+\.\d\d",
        ),
        (
            "muon.py",
            r"^Muon lr drift \(max-min log2 lr\*, widths \d+\.\.\d+, \d+x\): muon-mup \d+\.\d\d "
            r"\(target <= 0\.5: (met|MISSED)\); adamw-mup \d+\.\d\d",
        ),
    ],
)
def test_benchmark_quick(script: str, last_line: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(last_line, proc.stdout.strip().splitlines()[-1])
