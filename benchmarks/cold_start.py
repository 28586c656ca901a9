"""Cold start of `hptransfer suggest --width 4096` vs `python -c pass`, same run.

Target (DESIGN.md): under 0.5 s absolute, and torch never imported.

    python benchmarks/cold_start.py [--quick]

Last line: the median wall time of `suggest` and its ratio to a bare interpreter start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

SUGGEST = (
    "import sys\nfrom hptransfer.cli.main import main\n"
    "sys.argv = ['hptransfer', 'suggest', '--width', '4096']\n"
    "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
    "assert 'torch' not in sys.modules, 'suggest imported torch'\n"
)


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 15
    wall(SUGGEST)  # warm the file cache: "cold" means a new interpreter, not a cold disk
    bare, suggest = [], []
    for _ in range(runs):  # interleaved so background load hits both alike
        bare.append(wall("pass"))
        suggest.append(wall(SUGGEST))
    b, s = statistics.median(bare), statistics.median(suggest)
    print(f"python -c pass: median {b * 1e3:.0f} ms over {runs} runs")
    print(
        f"hptransfer suggest --width 4096: median {s * 1e3:.0f} ms, max {max(suggest) * 1e3:.0f} ms"
        " (torch not imported)"
    )
    print(f"suggest cold start: {s:.3f} s (target < 0.5 s), {s / b:.1f}x a bare `python -c pass`")


if __name__ == "__main__":
    main()
