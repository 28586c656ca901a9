"""What the sweep benchmarks (transfer, muon) keep from an lr / wd sweep, and read back from it."""

from __future__ import annotations

import math
from typing import Any

from hptransfer.tuning.sweep import SweepResult


def best_direct(result: SweepResult, width: int) -> float:
    """The lowest finite loss a sweep reached at ``width`` (inf when none)."""
    ys = [y for y in result.curves.get(width, ([], []))[1] if math.isfinite(y)]
    return min(ys) if ys else math.inf


def drift_all(optima: dict[str, Any]) -> float | None:
    """max − min of log2 optimum over all widths (None with fewer than two optima)."""
    xs = [o["log2"] for o in optima.values()]
    return max(xs) - min(xs) if len(xs) >= 2 else None


def sweep_entry(res: SweepResult) -> dict[str, Any]:
    """What the docs need from one sweep: curves, optima, drift, run count and summed run time."""
    optima = {
        str(w): {"log2": o.log2, "loss": o.loss, "at_edge": o.at_edge, "fitted": o.fitted}
        for w, o in sorted(res.optima.items())
    }
    return {
        "curves": {str(w): {"log2": xs, "loss": ys} for w, (xs, ys) in sorted(res.curves.items())},
        "optima": optima,
        "drift": drift_all(optima),
        "runs": len(res.records),
        "run_seconds": sum(r.seconds for r in res.records),
        "seeds": {str(w): sorted({r.seed for r in res.records if r.width == w}) for w in sorted(res.curves)},
    }


def setting_widths(r: dict[str, Any]) -> list[int]:
    """The widths of a saved sweep benchmark's setting."""
    return [int(w) for w in r["setting"]["widths"]]
