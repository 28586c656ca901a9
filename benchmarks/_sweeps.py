"""What the sweep benchmarks (transfer, muon, depth, eps) keep from their runs and sweeps, and read
back from them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
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


class RunCache:
    """Training runs by key, one JSON line per run in ``path`` (so a killed benchmark resumes),
    with the bookkeeping a results file reports: runs trained now, their seconds, keys used."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.done[row["key"]] = row
        self.trained = 0
        self.train_seconds = 0.0
        self.used: set[str] = set()

    def row(self, key: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The cached row of ``key``, or ``run()``'s (a dict with ``seconds``), stored."""
        if key not in self.done:
            row = {"key": key, **run()}
            self.done[key] = row
            self.trained += 1
            self.train_seconds += float(row["seconds"])
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
        self.used.add(key)
        return self.done[key]

    def used_seconds(self) -> float:
        """Training seconds of every run used (cached or not)."""
        return sum(float(self.done[k]["seconds"]) for k in self.used)


def seed_mean(losses: list[float]) -> tuple[float, list[float]]:
    """The mean over seeds (inf when a seed diverged) and the seeds' losses."""
    return (sum(losses) / len(losses) if all(map(math.isfinite, losses)) else math.inf), losses
