"""Property: every bad command line is one clean error (exit 2, one stderr line, no traceback,
nothing written, no training). The cases come from ``benchmarks/cli_fuzz.py``, which runs more of
them and records how many were clean (docs/results-cli_fuzz.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_fuzz.py"
_spec = importlib.util.spec_from_file_location("cli_fuzz", _PATH)
assert _spec is not None and _spec.loader is not None
cli_fuzz = importlib.util.module_from_spec(_spec)
sys.modules["cli_fuzz"] = cli_fuzz
_spec.loader.exec_module(cli_fuzz)


@pytest.fixture(scope="module")
def harness():  # type: ignore[no-untyped-def]
    with cli_fuzz.harness() as mods:
        yield mods


# derandomize: the same 60 examples every run, so a red CI can be reproduced; the benchmark
# (benchmarks/cli_fuzz.py) explores 300 more.
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=cli_fuzz.cases())
def test_bad_command_line_is_one_clean_error(harness, case):  # type: ignore[no-untyped-def]
    outcome = cli_fuzz.run_case(case)
    assert outcome.clean, cli_fuzz.explain(case, outcome)


def test_the_harness_sees_a_dirty_case(harness):  # type: ignore[no-untyped-def]
    """The checks can fail: a good command line that trains trips the wire, a traceback is seen."""
    trains = cli_fuzz.Case("ok", ("diagnose", "--model", "mlp", "--widths", "16,32", "--steps", "2"))
    outcome = cli_fuzz.run_case(trains)
    assert not outcome.clean and outcome.why == "training started"
    fine = cli_fuzz.Case("ok", ("suggest", "--width", "512"))
    assert cli_fuzz.run_case(fine).why == "exit 0"
