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
    # every row says what the products alone allow, at the main tolerance and at the target's
    a_lines = [line for line in lines if line.startswith("A ")]
    assert a_lines and all(line.count("reachable") == 2 for line in a_lines)
    assert re.search(r"where reachable\); vs svds", lines[-1]) and "; at tol 0.001: >= 30x in" in lines[-1]


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
    assert "reachable" in text
    for ref in re.findall(r"\(figures/([^)]+\.png)\)", text):
        assert (tmp_path / ref).exists(), ref


def test_targets_counted_where_reachable(tmp_path: Path) -> None:
    # rows where even the floor misses 30x are counted apart and named, the raw count stays
    spec = importlib.util.spec_from_file_location("spectral_bench_targets", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))
    spec.loader.exec_module(module)

    def row(kind: str, ours: float, floor: float, full: float, svds: float) -> dict:
        return {
            "shape": [512, 2048],
            "kind": kind,
            "ours_s": ours,
            "floor_s": floor,
            "best_full_s": full,
            "svds_tol_s": svds,
        }

    rows = [
        row("gaussian", 0.02, 0.01, 0.1, 0.05),  # floor allows 10x: unreachable, 5x measured
        row("trained-like", 0.002, 0.001, 0.1, 0.0005),  # 50x met; svds beats the floor
        row("trained-like", 0.01, 0.001, 0.1, 0.02),  # reachable (100x), 10x: missed
    ]
    t = module._target_rows(rows)
    assert (t["full_met"], t["full_reachable"], t["full_met_reachable"]) == (1, 2, 1)
    assert [r["kind"] for r in t["full_unreachable"]] == ["gaussian"]
    assert (t["svds_met"], t["svds_reachable"], t["svds_met_reachable"]) == (2, 2, 2)
    assert t["floor_met"] == 2
    text = "\n".join(module._target_lines(t, 1e-4))
    assert "**1 of 3** rows" in text and "met in **1 of 2** of those" in text
    assert "512×2048 gaussian (floor 10 ms, best full 100 ms: at most 10.0×)" in text
    assert "svds 0.5 ms, floor 1.0 ms" in text
