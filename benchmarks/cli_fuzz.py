"""CLI fuzz: random bad command lines across the five commands, each must be one clean error.

Bad widths, config files (binary, UTF-16, wrong types, NaN/inf/huge numbers, unknown keys and
sections), sweep grids, storage URLs, model specs and output paths, drawn by hypothesis. A command
line is *clean* when it exits 2 with exactly one line on stderr, no traceback, nothing written in
its working folder, and before any training (a tripwire on ``backward`` and ``autograd.grad``).
``tests/test_cli_fuzz.py`` runs a bounded number of the same cases on every test run.

    python3 benchmarks/cli_fuzz.py [--examples 300] [--seed 0]

Usage errors click finds itself (``--width abc`` for an integer option, an unknown option) are one
line too (``cli.safety.OneLineUsageErrors``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hypothesis import strategies as st

BASE: dict[str, list[str]] = {  # cheap, valid command lines; one option at a time is made bad
    "suggest": ["suggest", "--width", "512"],
    "diagnose": ["diagnose", "--model", "mlp", "--widths", "16,32"],
    "sweep": ["sweep", "--task", "regression", "--widths", "16,32"],
    "tune": ["tune", "--model", "mlp", "--width", "16", "--trials", "1", "--storage", "sqlite:///t.db"],
    "stn": ["stn", "--epochs", "1"],
}
TRAINING = ("diagnose", "sweep", "tune", "stn")

# Modules for --model MODULE:FACTORY, written once into a folder on sys.path (outside the cases'
# working folders: importing writes __pycache__).
MODULES = {
    "fzmods_syntax": "def make(width)\n    return None\n",
    "fzmods_raise": "raise RuntimeError('broken at import')\n",
    "fzmods_ok": (
        "import torch\n"
        "not_callable = 5\n"
        "def raises(width):\n    raise RuntimeError('factory failed')\n"
        "def notmod(width):\n    return 42\n"
        "def fixed(width):\n    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))\n"
    ),
}
MODEL_SPECS = (
    "nosuchmod_xyz:make",
    "fzmods_syntax:make",
    "fzmods_raise:make",
    "fzmods_ok:missing",
    "fzmods_ok:not_callable",
    "fzmods_ok:raises",
    "fzmods_ok:notmod",
    ":",
    "a:b:c",
    "llama2",
    "",
)
BAD_INT_TOKENS = ("0", "-16", "abc", "1.5", "1e3", "0x10", "16.0", "nan", "inf", str(2**63), str(10**400))
GRIDS = (
    "",
    "a:b",
    "0:inf",
    "nan:1",
    "1:2:0",
    "-6:-4:0.00001",
    "1024:1026",
    "2000,2001,2002",
    "1:1",
    "5:1",
    "1:2:3:4",
    ",",
    "1e400:1e401",
    "-10:-4:-1",
    "-8",
)
STORAGES = (
    "notaurl",
    "foo://x",
    "postgresql+psycopg://u:pw@127.0.0.1:1/x",
    "mysql+nosuchdriver://u@127.0.0.1:1/x",
    "sqlite:////nonexistent-dir-fz/x.db",
    "sqlite:///notadb.db",
    "journal://garbage.log",
    "journal:///",
)
STORAGE_FILES = {"notadb.db": b"this is not a database\n" * 20, "garbage.log": b"garbage{{{\nmore\n"}
CONFIG_KEYS = {
    "proxy.base_width": "int",
    "proxy.head_dim": "int",
    "proxy.n_heads": "int",
    "hyper.lr": "float",
    "hyper.weight_decay": "float",
    "hyper.init_scale": "float",
    "hyper.output_mult": "float",
    "hyper.vector_lr_mult": "float",
    "rule.name": "str",
    "rule.wd_exponent": "float",
    "rule.optimizer": "str",
    "rule.readout": "str",
}
BAD_VALUES = {  # TOML literals no key of that kind accepts
    "int": ("0", "-5", "1.5", "nan", "inf", "1e400", '"abc"', "[1, 2]", "true", "{a = 1}", "1e300"),
    "float": ("nan", "inf", "-inf", "1e400", "-1.0", '"abc"', "[1.0]", "true", "{a = 1}"),
    "str": ("5", "[1]", "true", '"no-such-name"', "{a = 1}", "nan"),
}


class Case(NamedTuple):
    """One bad command line and the files its working folder starts with."""

    category: str
    argv: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...] = ()


class Outcome:
    """What one case did (``why`` says what was not clean)."""

    def __init__(self, clean: bool, exit_code: int | None, why: str = "", stderr: list[str] | None = None):
        self.clean, self.exit_code, self.why = clean, exit_code, why
        self.stderr = stderr or []
        self.seconds = 0.0


def _with(command: str, option: str, value: str) -> tuple[str, ...]:
    """The command's base line with ``option`` set to ``value`` (replaced or appended)."""
    argv = list(BASE[command])
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return tuple(argv)


@st.composite
def _widths(draw: st.DrawFn) -> Case:
    big = st.one_of(st.integers(max_value=0), st.integers(min_value=2**40 + 1, max_value=10**30))
    command = draw(st.sampled_from(["suggest", "diagnose", "sweep", "tune", "stn"]))
    if command in ("diagnose", "sweep"):  # a comma list (a string option): any bad token
        bad = draw(st.one_of(st.sampled_from(BAD_INT_TOKENS), big.map(str)))
        good = draw(st.sampled_from(["16", "32", "64"]))
        text = draw(st.sampled_from([f"{good},{bad}", f"{bad},{good}", bad]))
        return Case("width", _with(command, "--widths", text))
    value = draw(st.one_of(big.map(str), st.sampled_from(BAD_INT_TOKENS)))  # an integer option
    if command == "stn":
        return Case("width", (*_with(command, "--width", value), "--model", "fzmods_ok:fixed"))
    return Case("width", _with(command, "--width", value))


@st.composite
def _configs(draw: st.DrawFn) -> Case:
    command = draw(st.sampled_from(["suggest", "diagnose", "sweep", "tune"]))
    kind = draw(st.sampled_from(["value", "unknown", "bytes", "utf16", "json", "path"]))
    name = "proxy.toml"
    if kind == "value":
        key = draw(st.sampled_from(sorted(CONFIG_KEYS)))
        section, leaf = key.split(".")
        value = draw(st.sampled_from(BAD_VALUES[CONFIG_KEYS[key]]))
        body = f"[{section}]\n{leaf} = {value}\n".encode()
    elif kind == "unknown":
        word = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12))
        body = draw(
            st.sampled_from(
                [
                    f"[{word}x]\nkey = 1\n",
                    f"[proxy]\n{word}_x = 1\n",
                    f"[hyper]\n{word}_x = 0.1\n",
                    f"{word} = 1\n",
                ]
            )
        ).encode()
    elif kind == "bytes":  # never valid UTF-8: starts with a byte no UTF-8 text starts with
        body = b"\xff" + draw(st.binary(max_size=64))
    elif kind == "utf16":
        body = "[proxy]\nbase_width = 256\n".encode("utf-16")
    elif kind == "json":
        name = "proxy.json"
        body = draw(
            st.sampled_from(
                [
                    b"{",
                    b"[1, 2]",
                    b"null",
                    b'{"proxy": {"base_width": "abc"}}',
                    b'{"proxy": {"base_width": 1e300}}',
                    b'{"hyper": {"lr": NaN}}',
                    b'{"hyper": {"lr": Infinity}}',
                    b'{"rule": {"name": 5}}',
                    b'{"nope": {}}',
                ]
            )
        )
    else:  # a path that is not a readable file
        path = draw(st.sampled_from(["missing.toml", ".", "sub/missing.json"]))
        return Case("config", _with(command, "--config", path))
    return Case("config", _with(command, "--config", name), ((name, body),))


@st.composite
def _grids(draw: st.DrawFn) -> Case:
    junk = st.text(alphabet="0123456789:,-xyz#", min_size=1, max_size=10).filter(
        lambda t: any(c in "xyz#" for c in t)
    )
    grid = draw(st.one_of(st.sampled_from(GRIDS), junk))
    return Case("grid", (*BASE["sweep"], f"--grid={grid}"))


@st.composite
def _storages(draw: st.DrawFn) -> Case:
    url = draw(st.one_of(st.sampled_from(STORAGES), st.sampled_from(["sqlite:///missing.db", "missing.log"])))
    command = draw(st.sampled_from(["suggest", "tune", "sweep"]))
    if command == "suggest" or url in ("sqlite:///missing.db", "missing.log"):
        argv = _with("suggest", "--study", url)  # reading a study must not create the file
    else:
        argv = _with(command, "--storage", url)
    files = tuple((n, b) for n, b in STORAGE_FILES.items() if n in url)
    return Case("storage", argv, files)


@st.composite
def _models(draw: st.DrawFn) -> Case:
    command = draw(st.sampled_from(TRAINING))
    spec = draw(st.sampled_from(MODEL_SPECS))
    argv = _with(command, "--model", spec)
    if command == "tune":
        argv = (*argv, "--task", "regression")
    return Case("model", argv)


@st.composite
def _outs(draw: st.DrawFn) -> Case:
    command = draw(st.sampled_from(TRAINING))
    where = draw(st.sampled_from(["taken", "taken/sub", "taken/sub/deeper"]))
    return Case("out", _with(command, "--out", where), (("taken", b"a file, not a folder\n"),))


@st.composite
def _usage(draw: st.DrawFn) -> Case:
    """Command lines click itself refuses: unknown options, a missing value, a value of the wrong type."""
    command = draw(st.sampled_from(sorted(BASE)))
    word = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=2, max_size=10))
    kind = draw(st.sampled_from(["unknown", "no-value", "type"]))
    if kind == "unknown":
        return Case("usage", (*BASE[command], f"--zz{word}"))
    if kind == "no-value":  # an option that takes a value, given none
        return Case("usage", (*BASE[command], "--out" if command != "suggest" else "--config"))
    option = {
        "suggest": "--top-k",
        "diagnose": "--steps",
        "sweep": "--steps",
        "tune": "--steps",
        "stn": "--epochs",
    }
    return Case(
        "usage", _with(command, option[command], draw(st.sampled_from(["x", "1.5", "", "1e3", "--"])))
    )


def cases() -> st.SearchStrategy[Case]:
    """Every category of bad input, drawn evenly."""
    return st.one_of(_widths(), _configs(), _grids(), _storages(), _models(), _outs(), _usage())


class _Trained(BaseException):
    """Raised by the tripwire: training started although the input was bad."""


@contextlib.contextmanager
def harness() -> Iterator[Path]:
    """Torch at one thread, the fuzz modules on sys.path, and a tripwire on training."""
    import torch

    torch.set_num_threads(1)
    saved = (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad)

    def tripwire() -> Any:  # one function object per patched name (torch._dynamo keeps a table)
        def trip(*args: Any, **kwargs: Any) -> None:
            raise _Trained("training started")

        return trip

    with tempfile.TemporaryDirectory(prefix="hptransfer-fuzz-mods-") as mods:
        for name, text in MODULES.items():
            Path(mods, f"{name}.py").write_text(text)
        sys.path.insert(0, mods)
        torch.Tensor.backward = tripwire()  # type: ignore[method-assign]
        torch.autograd.backward = tripwire()
        torch.autograd.grad = tripwire()
        try:
            yield Path(mods)
        finally:
            torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad = saved  # type: ignore[method-assign,assignment]
            sys.path.remove(mods)
            for name in MODULES:
                sys.modules.pop(name, None)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def run_case(case: Case) -> Outcome:
    """Run one case in a fresh working folder (call inside :func:`harness`)."""
    from typer.testing import CliRunner

    from hptransfer.cli.main import app

    with tempfile.TemporaryDirectory(prefix="hptransfer-fuzz-") as tmp:
        root = Path(tmp)
        for name, body in case.files:
            (root / name).write_bytes(body)
        before = _snapshot(root)
        cwd = os.getcwd()
        os.chdir(root)
        start = time.perf_counter()
        try:
            res = CliRunner().invoke(app, list(case.argv))
        except _Trained:  # a BaseException: CliRunner lets it through
            return Outcome(clean=False, exit_code=None, why="training started")
        finally:
            os.chdir(cwd)
        seconds = time.perf_counter() - start
        after = _snapshot(root)
    err = res.stderr.strip().splitlines()
    exc = res.exception
    out = Outcome(clean=False, exit_code=res.exit_code, stderr=err)
    out.seconds = seconds
    if isinstance(exc, _Trained):
        out.why = "training started"
    elif exc is not None and not isinstance(exc, SystemExit):
        out.why = f"{type(exc).__name__}: {exc}"
    elif "Traceback" in res.output:
        out.why = "traceback printed"
    elif res.exit_code != 2:
        out.why = f"exit {res.exit_code}"
    elif len(err) != 1:
        out.why = f"{len(err)} lines on stderr"
    elif after != before:
        changed = sorted(set(after.items()) ^ set(before.items()))
        out.why = f"wrote {sorted({k for k, _ in changed})}"
    else:
        out.clean = True
    return out


def explain(case: Case, outcome: Outcome) -> str:
    return f"{' '.join(case.argv)!r} ({case.category}): {outcome.why}; stderr: {outcome.stderr[:3]}"


def run(examples: int, seed: int) -> dict[str, Any]:
    """Draw ``examples`` cases (reproducibly from ``seed``), run each, count the clean ones."""
    import random

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    tried: list[tuple[Case, Outcome]] = []

    @hseed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[__import__("hypothesis").Phase.generate],
    )
    @given(cases())
    def one(case: Case) -> None:
        tried.append((case, run_case(case)))

    random.seed(seed)
    start = time.perf_counter()
    with harness():
        one()
    seconds = time.perf_counter() - start
    by_cat: dict[str, dict[str, int]] = {}
    for case, o in tried:
        c = by_cat.setdefault(case.category, {"tried": 0, "clean": 0})
        c["tried"] += 1
        c["clean"] += int(o.clean)
    return {
        "examples": examples,
        "seed": seed,
        "tried": len(tried),
        "distinct": len({c.argv + tuple(n for n, _ in c.files) for c, _ in tried}),
        "clean": sum(o.clean for _, o in tried),
        "by_category": by_cat,
        "by_command": {
            cmd: {
                "tried": sum(c.argv[0] == cmd for c, _ in tried),
                "clean": sum(c.argv[0] == cmd and o.clean for c, o in tried),
            }
            for cmd in BASE
        },
        "not_clean": [explain(c, o) for c, o in tried if not o.clean][:20],
        "seconds": seconds,
        "max_case_seconds": max((o.seconds for _, o in tried), default=0.0),
    }


def headline_line(r: dict[str, Any]) -> str:
    return f"{r['clean']}/{r['tried']} clean ({r['distinct']} distinct)"


def render(data: dict[str, Any], figures: Path) -> str:
    """docs/results-cli_fuzz.md from the results file (no figures)."""
    from _results import command_line, environment_table

    r, env = data["results"], data["environment"]
    rows = ["| category | tried | clean |", "|---|---:|---:|"]
    for name, c in sorted(r["by_category"].items()):
        rows.append(f"| {name} | {c['tried']} | {c['clean']} |")
    cmds = ["| command | tried | clean |", "|---|---:|---:|"]
    for name, c in r["by_command"].items():
        cmds.append(f"| `hptransfer {name}` | {c['tried']} | {c['clean']} |")
    bad = "\n".join(f"* {line}" for line in r["not_clean"]) or "None."
    return f"""# CLI fuzz: bad input is one clean line

Generated from `benchmarks/results/cli_fuzz.json`, written by `{command_line(data)}`.

{r["tried"]} random bad command lines ({r["distinct"]} distinct; hypothesis seed {r["seed"]}) across
the five commands: bad widths, config files (binary, UTF-16, wrong types, NaN/inf/huge numbers,
unknown keys and sections, missing files), sweep grids, storage URLs, model specs and output paths.
A line is clean when it exits 2 with one line on stderr, no traceback, nothing written in its
working folder, and before any training (a tripwire on `backward` and `autograd.grad`).
`tests/test_cli_fuzz.py` runs a bounded number of the same cases on every test run.

**{r["clean"]} of {r["tried"]} clean**, {r["seconds"]:.0f} s in all (slowest case
{r["max_case_seconds"]:.2f} s).

{chr(10).join(rows)}

{chr(10).join(cmds)}

Not clean:

{bad}

Usage errors click finds itself (a value of the wrong type, an unknown option, a missing value) are
in the draw as well (category `usage`).

## Environment

{environment_table(env)}
"""


def headline(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = data["results"]
    return [
        (
            "bad command lines (fuzzed) give one clean line, exit 2, nothing written",
            headline_line(r),
            "`python3 benchmarks/cli_fuzz.py`",
        )
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    r = run(args.examples, args.seed)
    for line in r["not_clean"]:
        print("not clean:", line)
    from _results import save_results

    print(f"results: {save_results('cli_fuzz', r)}")
    print(f"cli fuzz: {headline_line(r)}")


if __name__ == "__main__":
    main()
