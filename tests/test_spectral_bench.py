"""Smoke run of benchmarks/spectral.py --quick: it runs and its last line is the headline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "spectral.py"


def test_spectral_benchmark_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert re.match(r"^spectral: top-sigma 256x1024: \d+x \(gaussian, err [\d.e+-]+\)", lines[-1])
    assert "M-param state_dict in" in lines[-1] and "hidden sigma_max ratio 16->32" in lines[-1]
    assert any(line.startswith("C mup-wd-sqrt") for line in lines)
