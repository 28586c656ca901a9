"""Smoke run of benchmarks/spectral.py --quick (its last line is the headline) and its render()."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "spectral.py"
RESULTS = BENCH.parent / "results" / "spectral.json"


def test_spectral_benchmark_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--skip", "c"], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert re.match(
        r"^spectral: top sigma vs best of svdvals\(A\)/svdvals\(A\.mT\): [\d.]+-[\d.]+x", lines[-1]
    )
    assert "vs svds(k=1) at tol 0.0001" in lines[-1] and "M-param state_dict" in lines[-1]
    assert any(line.startswith("A 128x512 gaussian") and "floor" in line for line in lines)


def test_render_from_committed_results(tmp_path: Path) -> None:
    if not RESULTS.exists():
        import pytest

        pytest.skip("benchmarks/results/spectral.json not produced yet")
    spec = importlib.util.spec_from_file_location("spectral_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))
    spec.loader.exec_module(module)
    data = json.loads(RESULTS.read_text())
    text = module.render(data, tmp_path)
    assert "best full" in text and "svds" in text and "floor" in text
    for ref in re.findall(r"\(figures/([^)]+\.png)\)", text):
        assert (tmp_path / ref).exists(), ref
