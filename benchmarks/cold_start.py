"""Cold start of `hptransfer suggest --width 4096` against Python importing rich, same run.

Targets (issue 12, DESIGN.md): the CPU time of `suggest` at most 2x that of
`python -c "import rich"` (the floor: the table is drawn with rich), under 0.5 s absolute, and
torch never imported. Each command runs in a fresh interpreter; the runs are interleaved so that
background load hits every command alike, and the median is reported. Measured side by side:

* `python -c pass` (the interpreter alone) and `python -c "import rich"` (the floor);
* `python -c "import rich.console, rich.table"`: what drawing the table needs from rich alone;
* `suggest` as the console script runs it (`hptransfer.cli.entry:main`: the typer-free path),
  with the table and with `--json` (no table: rich.table is not imported);
* `suggest` through the typer app (`hptransfer.cli.main:app`), the path every other command takes
  (typer imports pydantic, which costs more than the rest together).

    python benchmarks/cold_start.py [--quick] [--runs N]

Results go to benchmarks/results/cold_start.json (not with --quick); the last printed line is the
headline: the fast path's CPU time and its ratio to the rich floor measured in the same run.

Bytecode is cached as for an installed package: the children run with PYTHONDONTWRITEBYTECODE
unset and PYTHONPYCACHEPREFIX pointing at a temporary folder that the warm-up run fills (an
editable checkout under PYTHONDONTWRITEBYTECODE=1 recompiles hptransfer on every start).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import command_line, environment_table, save_results

_CHECK = (
    "assert 'torch' not in sys.modules, 'suggest imported torch'\n"
    "assert {typer_check}, 'typer import: expected {typer_expect}'\n"
)
COMMANDS: dict[str, str] = {
    "python -c pass": "pass",
    "python -c 'import rich'": "import rich",
    "python -c 'import rich.console, rich.table'": "import rich.console, rich.table",
    "suggest (console script)": (
        "import sys\nfrom hptransfer.cli.entry import main\n"
        "sys.argv = ['hptransfer', 'suggest', '--width', '4096']\nmain()\n"
        + _CHECK.format(typer_check="'typer' not in sys.modules", typer_expect="none")
    ),
    "suggest --json (console script)": (
        "import sys\nfrom hptransfer.cli.entry import main\n"
        "sys.argv = ['hptransfer', 'suggest', '--width', '4096', '--json']\nmain()\n"
        + _CHECK.format(typer_check="'typer' not in sys.modules", typer_expect="none")
    ),
    "suggest (typer app)": (
        "import sys\nfrom hptransfer.cli.main import app\n"
        "try:\n    app(['suggest', '--width', '4096'], prog_name='hptransfer')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        + _CHECK.format(typer_check="'typer' in sys.modules", typer_expect="typer")
    ),
}
FLOOR, FAST, TYPER = "python -c 'import rich'", "suggest (console script)", "suggest (typer app)"
RICH = "python -c 'import rich.console, rich.table'"
JSON = "suggest --json (console script)"
TARGET_RATIO = 2.0
TARGET_SECONDS = 0.5


def measure(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def run(runs: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    samples: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="hptransfer-pycache-") as cache:
        env["PYTHONPYCACHEPREFIX"] = cache
        for code in COMMANDS.values():  # bytecode and file cache: "cold" means a new interpreter
            measure(code, env)
        for _ in range(runs):  # interleaved, so background load hits every command alike
            for name, code in COMMANDS.items():
                cpu, wall = measure(code, env)
                samples[name]["cpu"].append(cpu)
                samples[name]["wall"].append(wall)
    out: dict[str, Any] = {"runs": runs, "bytecode": "cached (PYTHONPYCACHEPREFIX)", "commands": {}}
    for name, s in samples.items():
        out["commands"][name] = {
            "cpu_median_s": statistics.median(s["cpu"]),
            "wall_median_s": statistics.median(s["wall"]),
            "cpu_max_s": max(s["cpu"]),
            "cpu_s": s["cpu"],
            "wall_s": s["wall"],
        }
    return out


def _ratio(r: dict[str, Any], name: str, base: str = FLOOR) -> float:
    c = r["commands"]
    return float(c[name]["cpu_median_s"] / c[base]["cpu_median_s"])


def headline_line(r: dict[str, Any]) -> str:
    fast = r["commands"][FAST]["cpu_median_s"]
    return (
        f"suggest cold start: {fast:.3f} s (target < {TARGET_SECONDS} s), {_ratio(r, FAST):.1f}x the CPU "
        f"of `python -c 'import rich'` (target ≤ {TARGET_RATIO:g}x); through typer {_ratio(r, TYPER):.1f}x"
    )


def render(data: dict[str, Any], figures: Path) -> str:
    """docs/results-cold_start.md from the results file (no figures)."""
    r, env = data["results"], data["environment"]
    rows = [
        "| command | CPU (median) | wall (median) | CPU max | CPU vs `import rich` |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in r["commands"].items():
        rows.append(
            f"| {name} | {c['cpu_median_s'] * 1e3:.0f} ms | {c['wall_median_s'] * 1e3:.0f} ms | "
            f"{c['cpu_max_s'] * 1e3:.0f} ms | {_ratio(r, name):.2f}× |"
        )
    c = r["commands"]
    rich_extra = c[RICH]["cpu_median_s"] - c[FLOOR]["cpu_median_s"]
    own = c[FAST]["cpu_median_s"] - c[RICH]["cpu_median_s"]
    room = max(0.0, TARGET_RATIO - _ratio(r, RICH)) * c[FLOOR]["cpu_median_s"]
    met = _met(r)
    return f"""# Cold start of `hptransfer suggest`

Generated from `benchmarks/results/cold_start.json`, written by `{command_line(data)}`.

`hptransfer suggest --width 4096` in a fresh interpreter, {r["runs"]} interleaved runs of each
command (user + system CPU time of the child process, and wall time). The console script reads a
plain `suggest` command line without typer (`hptransfer.cli.entry`); typer, and the pydantic it
imports, load only for other commands, `--help` and malformed options. Neither path imports torch
(each run asserts it).

{chr(10).join(rows)}

Target: CPU time at most {TARGET_RATIO:g}× `python -c 'import rich'` and under {TARGET_SECONDS} s:
**{"met" if met else "missed"}** ({_ratio(r, FAST):.2f}×; through the typer app {_ratio(r, TYPER):.2f}×).
Most of what is left is rich itself: importing the two rich modules that draw the table costs
{_ratio(r, RICH):.2f}× on its own ({rich_extra * 1e3:.0f} ms above `import rich`). hptransfer's own
share (importing `hptransfer.scaling`, computing the plans, laying out the table) is
{max(0.0, own) * 1e3:.0f} ms, so the table cannot reach {TARGET_RATIO:g}× while rich draws it: rich's two
modules leave {room * 1e3:.0f} ms for everything else.
`suggest --json`, the form scripts call, loads no rich at all: {_ratio(r, JSON):.2f}×.

## Environment

{environment_table(env)}
"""


def _met(r: dict[str, Any]) -> bool:
    return _ratio(r, FAST) <= TARGET_RATIO and r["commands"][FAST]["cpu_median_s"] < TARGET_SECONDS


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    fast = r["commands"][FAST]
    verdict = "met" if _met(r) else f"missed; `import rich.console, rich.table` alone {_ratio(r, RICH):.2f}×"
    return [
        (
            f"`hptransfer suggest` cold start, CPU vs `python -c 'import rich'` (≤ {TARGET_RATIO:g}×)",
            f"**{_ratio(r, FAST):.2f}×** ({verdict}; {fast['cpu_median_s'] * 1e3:.0f} ms; through typer "
            f"{_ratio(r, TYPER):.2f}×)",
            "`python3 benchmarks/cold_start.py`",
        )
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs, nothing saved")
    parser.add_argument("--runs", type=int, default=None, help="runs per command (default 15)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 15)
    r = run(runs)
    for name, c in r["commands"].items():
        print(
            f"{name}: CPU median {c['cpu_median_s'] * 1e3:.0f} ms, wall median "
            f"{c['wall_median_s'] * 1e3:.0f} ms over {runs} runs"
        )
    if not args.quick:
        print(f"results: {save_results('cold_start', r)}")
    print(headline_line(r))


if __name__ == "__main__":
    main()
