"""The committed docs are what the committed benchmark results render (benchmarks/render_docs.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RENDER = ROOT / "benchmarks" / "render_docs.py"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_docs_match_committed_results() -> None:
    proc = subprocess.run(
        [sys.executable, str(RENDER), "--check"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    if proc.returncode == 3:  # a benchmark module imports an optional package that is absent
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout


BENCH = """
DOC = "toy"

def render(data, figures):
    return "# Toy\\n\\nspeed-up: %.2fx\\n\\n![f](figures/toy.png)\\n" % data["results"]["speedup"]

def headline(data):
    return [("toy is fast (>= 2x)", "%.2fx" % data["results"]["speedup"], "`python3 benchmarks/toy.py`")]

if __name__ == "__main__":
    raise SystemExit("main must not run on import")
"""


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A miniature repository: one benchmark, its results file, README and RESULTS with markers."""
    rd = _load(RENDER, "render_docs_under_test")
    bench, docs = tmp_path / "benchmarks", tmp_path / "docs"
    (bench / "results").mkdir(parents=True)
    (docs / "figures").mkdir(parents=True)
    (bench / "toy.py").write_text(BENCH)
    (bench / "results" / "toy.json").write_text(
        json.dumps({"benchmark": "toy", "argv": ["toy.py"], "environment": {}, "results": {"speedup": 2.5}})
    )
    for path in (docs / "RESULTS.md", tmp_path / "README.md"):
        path.write_text(f"# Title\n\n{rd.BEGIN}\nstale table\n{rd.END}\n\nprose after\n")
    for attr, value in {
        "BENCH_DIR": bench,
        "ROOT": tmp_path,
        "RESULTS_DIR": bench / "results",
        "DOCS": docs,
        "FIGURES": docs / "figures",
        "SUMMARY_FILES": (docs / "RESULTS.md", tmp_path / "README.md"),
    }.items():
        monkeypatch.setattr(rd, attr, value)
    return rd


def test_render_writes_doc_and_headlines_then_check_is_clean(tree: ModuleType) -> None:
    assert tree.check()  # stale tables, missing doc and figure: problems before rendering
    assert tree.main([]) == 0
    doc = (tree.DOCS / "results-toy.md").read_text()
    assert doc.splitlines()[0] == tree.HEADER.format(name="toy")
    assert "speed-up: 2.50x" in doc
    readme = (tree.ROOT / "README.md").read_text()
    assert "| toy is fast (>= 2x) | 2.50x | `python3 benchmarks/toy.py` |" in readme
    assert "stale table" not in readme and readme.endswith("prose after\n")
    problems = tree.check()
    assert problems == ["docs/results-toy.md references figures/toy.png, which does not exist"]
    (tree.FIGURES / "toy.png").write_bytes(b"png")
    assert tree.check() == []


def test_check_catches_a_hand_edited_figure_and_a_changed_result(tree: ModuleType) -> None:
    tree.main([])
    (tree.FIGURES / "toy.png").write_bytes(b"png")
    doc = tree.DOCS / "results-toy.md"
    doc.write_text(doc.read_text().replace("2.50x", "3.00x"))
    assert tree.main(["--check"]) == 1
    tree.main([])
    results = tree.RESULTS_DIR / "toy.json"
    data = json.loads(results.read_text())
    data["results"]["speedup"] = 1.5
    results.write_text(json.dumps(data))
    problems = tree.check()
    stale = {p.split(" differs")[0] for p in problems}
    assert stale == {"docs/results-toy.md", "docs/RESULTS.md", "README.md"}


def test_check_flags_a_generated_doc_whose_results_are_gone(tree: ModuleType) -> None:
    tree.main([])
    (tree.FIGURES / "toy.png").write_bytes(b"png")
    (tree.RESULTS_DIR / "toy.json").unlink()
    assert any("results file that is gone" in p for p in tree.check())


def test_save_results_round_trip_with_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _load(ROOT / "benchmarks" / "_results.py", "results_under_test")
    monkeypatch.setattr(res, "RESULTS_DIR", tmp_path)
    path = res.save_results("toy", {"loss": float("inf"), "pairs": (1, 2), "nested": {"nan": float("nan")}})
    assert path == tmp_path / "toy.json"
    data = res.load_results("toy")
    assert data["benchmark"] == "toy" and data["argv"] == sys.argv
    assert data["results"] == {"loss": "inf", "pairs": [1, 2], "nested": {"nan": "nan"}}
    env = data["environment"]
    assert env["python"].count(".") == 2 and env["cpu_count"] >= 1
    assert set(env["packages"]) >= {"torch", "numpy", "optuna", "mup", "hptransfer"}
    assert {"git_commit", "git_dirty", "date_utc", "load_average", "torch_threads", "cpu_model"} <= set(env)
    with pytest.raises(TypeError, match=r"results\.bad"):
        res.save_results("toy", {"bad": object()})


def test_a_results_file_the_script_cannot_read_is_named(
    tree: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tree.RESULTS_DIR / "toy.json"
    data = json.loads(results.read_text())
    del data["results"]["speedup"]
    results.write_text(json.dumps(data))
    assert tree.main(["--check"]) == 1
    assert "benchmarks/toy.py cannot render benchmarks/results/toy.json (KeyError" in capsys.readouterr().err
