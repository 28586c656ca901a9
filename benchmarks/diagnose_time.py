"""How long `hptransfer diagnose` takes, and whether its default run is conclusive.

Runs README's first diagnose example (``hptransfer diagnose --model llama --out DIR``) as a
subprocess, timing it wall-clock, and records its outcome (exit code, AdamW timescales covered,
drifting / undecided layers). In the same run, a short diagnose (``--widths 32,64 --steps 30``) with
``--threads 1`` and ``--threads 2``, interleaved, min over repetitions: the evidence for the
default of one thread.

Usage:
    nice python3 benchmarks/diagnose_time.py            # ~5-8 min on 2 busy cores
    python3 benchmarks/diagnose_time.py --quick         # smoke run (seconds), nothing saved

The last printed line is the headline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line, environment_table, result_document, save_results

DOC = "diagnose"
README_EXAMPLE = ["diagnose", "--model", "llama"]
TARGET_S = 300.0


def _hptransfer(args: list[str]) -> tuple[int, float, str]:
    cmd = [sys.executable, "-c", "from hptransfer.cli.entry import main; main()", *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ})
    return proc.returncode, time.perf_counter() - t, proc.stdout + proc.stderr


def run_example(extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        code, secs, log = _hptransfer([*README_EXAMPLE, *extra, "--out", tmp])
        report = Path(tmp) / "report.json"
        if not report.exists():
            raise RuntimeError(f"diagnose failed (exit {code}):\n{log[-2000:]}")
        data = json.loads(report.read_text())
    print(f"README example: exit {code} ({data['outcome']}) in {secs:.0f} s", flush=True)
    return {
        "command": "hptransfer " + " ".join([*README_EXAMPLE, *extra, "--out", "DIR"]),
        "exit_code": code,
        "seconds": secs,
        "outcome": data["outcome"],
        "widths": data["widths"],
        "rule": data["rule"],
        "timescales": data["timescales"],
        "drifting": data["drifting"],
        "inconclusive": data["inconclusive"],
        "hidden": sum(1 for row in data["layers"] if row["class"] == "hidden"),
        "pooled": data["pooled"],
        "missing_evidence": data["missing_evidence"],
        "calibration": data["calibration"],
        "progress_lines": sum(1 for line in log.splitlines() if line.startswith("diagnose: rule")),
    }


def run_threads(steps: int, widths: str, repeat: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"1": [], "2": []}
    for _ in range(repeat):
        for threads in ("1", "2"):  # interleaved: both see the same load
            args = ["diagnose", "--model", "llama", "--widths", widths, "--steps", str(steps)]
            code, secs, log = _hptransfer([*args, "--no-coord", "--threads", threads, "--json"])
            if code not in (0, 1, 3):
                raise RuntimeError(f"diagnose --threads {threads} failed (exit {code}):\n{log[-2000:]}")
            times[threads].append(secs)
            print(f"threads {threads}: {secs:.1f} s", flush=True)
    return {"steps": steps, "widths": widths, "seconds": times, "best": {k: min(v) for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny settings, nothing saved")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions of the thread comparison")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    if args.quick:
        example = run_example(["--widths", "16,32,48", "--steps", "6", "--no-coord"])
        threads = run_threads(4, "16,32", 1)
    else:
        example = run_example([])
        threads = run_threads(30, "32,64", args.repeat)
    results = {
        "example": example,
        "threads": threads,
        "target_seconds": TARGET_S,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "quick": args.quick,
    }
    if args.quick:
        result_document("diagnose_time", results)  # validates the results without writing them
    else:
        print(f"saved {save_results('diagnose_time', results)}")
    print(headline_text(results))
    return 0


def headline_text(r: dict[str, Any]) -> str:
    ex, th = r["example"], r["threads"]["best"]
    return (
        f"diagnose: README example in {ex['seconds']:.0f} s (target {r['target_seconds']:.0f} s), "
        f"outcome {ex['outcome']} (exit {ex['exit_code']}); short run 2 threads {th['2']:.1f} s vs "
        f"1 thread {th['1']:.1f} s ({th['2'] / th['1']:.2f}x the time of 1 thread)"
    )


def render(data: dict[str, Any], figures: Path) -> str:
    """docs/results-diagnose.md from the results file (no figures)."""
    r, env = data["results"], data["environment"]
    ex, th = r["example"], r["threads"]
    pooled = ex["pooled"] or {}
    ci = pooled.get("alpha_ci")
    band = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
    met = "met" if ex["seconds"] <= r["target_seconds"] else "missed"
    lines = [
        "# `hptransfer diagnose`: run time and outcome of the default run",
        "",
        f"Command: `{command_line(data)}`",
        "",
        "## README's first example",
        "",
        f"`{ex['command']}`",
        "",
        "| | |",
        "|---|---|",
        f"| wall time | {ex['seconds']:.0f} s (target ≤ {r['target_seconds']:.0f} s: {met}) |",
        f"| outcome | {ex['outcome']} (exit {ex['exit_code']}) |",
        f"| rule, widths | {ex['rule']}, {', '.join(map(str, ex['widths']))} |",
        f"| AdamW timescales covered (slowest width) | {float(ex['timescales']):.1f} |",
        f"| hidden matrices drifting | {len(ex['drifting'])} of {ex['hidden']} "
        f"({', '.join(ex['drifting']) or 'none'}) |",
        f"| hidden matrices undecided | {len(ex['inconclusive'])} of {ex['hidden']} |",
        f"| pooled slope alpha | {pooled.get('alpha', float('nan')):+.3f}{band} |",
        f"| plain progress lines on stderr (not a terminal) | {ex['progress_lines']} |",
        "",
    ]
    if ex["missing_evidence"]:
        lines += ["What the run says would make it conclusive:", ""]
        lines += [f"* {m}" for m in ex["missing_evidence"]] + [""]
    lines += [
        "## Threads",
        "",
        f"`hptransfer diagnose --model llama --widths {th['widths']} --steps {th['steps']} --no-coord`, "
        "1 and 2 torch threads interleaved, min over repetitions:",
        "",
        "| threads | runs (s) | best (s) |",
        "|---|---|---|",
    ]
    for k in ("1", "2"):
        runs = ", ".join(f"{x:.1f}" for x in th["seconds"][k])
        lines.append(f"| {k} | {runs} | {th['best'][k]:.1f} |")
    lines += [
        "",
        f"Load average before / after: {', '.join(f'{x:.1f}' for x in r['load_before'])} / "
        f"{', '.join(f'{x:.1f}' for x in r['load_after'])}.",
        "",
        "## Environment",
        "",
        environment_table(env),
        "",
        f"Headline: {headline_text(r)}",
    ]
    return "\n".join(lines)


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    ex, th = r["example"], r["threads"]["best"]
    return [
        (
            f"`hptransfer diagnose --model llama` (README's first example) ≤ {r['target_seconds'] / 60:.0f} "
            "min with a conclusive verdict",
            f"{ex['seconds']:.0f} s, {ex['outcome']} (exit {ex['exit_code']}); 1 thread "
            f"{th['2'] / th['1']:.2f}x faster than 2",
            command_line(data),
        )
    ]


if __name__ == "__main__":
    raise SystemExit(main())
