"""Benchmark results as JSON files, so docs are generated from measurements and cannot drift.

A benchmark script is a ``main()`` that measures and calls :func:`save_results`, plus a pure
``render(data, figures) -> str`` that turns the saved JSON into markdown (and draws any figures
into ``figures``), and optionally ``headline(data) -> list[tuple[claim, measured, command]]`` for
the summary tables in ``docs/RESULTS.md`` and the README. ``python3 benchmarks/render_docs.py``
writes the docs; ``--check`` fails when a committed doc differs from what the results render.

Optional module attribute ``DOC = "stem"`` names the doc ``docs/results-<stem>.md`` when it is
not the benchmark's own name.

Draw figures with :func:`save_figure` (PNG, optional SVG, no timestamps) and return their
``figures/<stem>.png`` paths in the markdown; ``render`` must read only ``data`` (no measuring, no
hand-typed figures). Scripts import this module after putting their own folder on ``sys.path``
(``sys.path.insert(0, str(Path(__file__).resolve().parent))``), so they also work when imported
by path from a test.

    from _results import save_results          # benchmarks/ is on sys.path for scripts there
    save_results("transfer", {"drift": {"mup": 0.3}})   # -> benchmarks/results/transfer.json
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

PACKAGES = ("torch", "numpy", "scipy", "optuna", "transformers", "mup", "matplotlib", "hptransfer")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never take the index lock of a shared tree
    try:
        proc = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _torch_threads() -> int | None:
    if "torch" not in sys.modules and _version("torch") is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def environment() -> dict[str, Any]:
    """Where and with what a benchmark ran: Python, CPU, threads, package versions, commit, date, load.

    >>> env = environment()
    >>> {"python", "cpu_model", "torch_threads", "packages", "git_commit", "date_utc"} <= set(env)
    True
    >>> env["python"] == platform.python_version()
    True
    """
    status = _git("status", "--porcelain", "--untracked-files=no")
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": usable,
        "torch_threads": _torch_threads(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average": load,
    }


def _clean(value: Any, where: str = "results") -> Any:
    """JSON-ready copy: tuples become lists, non-finite floats become the strings "nan"/"inf"/"-inf"."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a string")
            out[key] = _clean(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _clean(value.item(), where)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def result_document(name: str, results: dict[str, Any]) -> dict[str, Any]:
    """What :func:`save_results` writes, without writing it (e.g. to render a ``--quick`` run)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad benchmark name {name!r}")
    return {
        "benchmark": name,
        "argv": list(sys.argv),
        "environment": environment(),
        "results": _clean(results),
    }


def save_results(name: str, results: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json``: benchmark, argv, environment and results.

    Non-finite floats are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON);
    :func:`as_float` reads them back.
    """
    data = result_document(name, results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def finish(
    name: str,
    results: dict[str, Any],
    *,
    quick: bool,
    render: Callable[[dict[str, Any], Path], Any],
    figures: Path | None,
) -> dict[str, Any]:
    """The end of a benchmark's run: a ``--quick`` run renders its document into ``figures`` (or
    a temporary folder) and writes nothing, since the renderer must work too; a full run saves
    it and says where. Returns the document, as the docs will read it."""
    if quick:
        doc = result_document(name, results)
        render(doc, figures or Path(tempfile.mkdtemp()))
        return doc
    path = save_results(name, results)
    print(f"results: {path.relative_to(ROOT)}; docs: python3 benchmarks/render_docs.py")
    return load_results(name)


def load_results(name: str) -> dict[str, Any]:
    """The whole JSON document that :func:`save_results` wrote for ``name``."""
    data: dict[str, Any] = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    return data


def as_float(value: Any) -> float:
    """A stored number back as a float (``"nan"``/``"inf"`` included).

    >>> as_float("inf"), as_float(2)
    (inf, 2.0)
    """
    return float(value)


def environment_table(env: dict[str, Any]) -> str:
    """Markdown table of a result's environment, the same in every generated doc."""
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v is not None)
    load = env.get("load_average")
    commit = env.get("git_commit") or "unknown"
    if env.get("git_dirty"):
        commit += " (uncommitted changes in the tree)"
    rows = [
        ("date (UTC)", env.get("date_utc")),
        ("Python", f"{env.get('python')} ({env.get('implementation')})"),
        ("platform", env.get("platform")),
        ("CPU", f"{env.get('cpu_model')}, {env.get('cpu_count')} cores"),
        ("torch threads", env.get("torch_threads")),
        ("load average (1, 5, 15 min)", ", ".join(str(x) for x in load) if load else "unknown"),
        ("packages", packages),
        ("git commit", commit),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def command_line(data: dict[str, Any]) -> str:
    """The command that produced a result, as ``python3 benchmarks/<script> ARGS``."""
    argv = list(data.get("argv") or [])
    script = Path(argv[0]).name if argv else f"{data['benchmark']}.py"
    return " ".join(["python3", f"benchmarks/{script}", *argv[1:]])


def save_figure(fig: Any, figures: Path, stem: str, svg: bool = False) -> str:
    """Save a matplotlib figure as ``figures/<stem>.png`` (and ``.svg``) with stable metadata.

    Returns the markdown-relative path (``figures/<stem>.png``) to put in a doc.
    """
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "hptransfer"
    figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(figures / f"{stem}.png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    if svg:
        fig.savefig(figures / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    return f"figures/{stem}.png"


def fmt(x: float | None, spec: str = ".2f") -> str:
    """``x`` formatted with ``spec``; "n/a" for None."""
    return "n/a" if x is None else format(x, spec)


def minutes(seconds: float) -> str:
    """``"12 min 3 s"``."""
    return f"{int(seconds // 60)} min {round(seconds % 60)} s"
