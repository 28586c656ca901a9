"""Sweeps: the optimum fit, bad input, resume after a kill, diverged runs, CLI errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hptransfer.cli.main import app
from hptransfer.scaling import ConfigError
from hptransfer.tuning.sweep import SweepSpec, drift, fit_optimum, log2_grid, run_sweep

torch.set_num_threads(1)


# -- fit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("true_opt", [-7.3, -6.0, -5.55])
def test_fit_recovers_parabola_vertex(true_opt, window):
    xs = [-10, -9, -8, -7, -6, -5, -4, -3]
    ys = [2.0 + 0.1 * (x - true_opt) ** 2 for x in xs]
    opt = fit_optimum(xs, ys, window=window)
    assert opt.fitted and not opt.at_edge
    assert opt.log2 == pytest.approx(true_opt, abs=1e-9)
    assert opt.loss == pytest.approx(2.0, abs=1e-9)
    assert opt.value == pytest.approx(2.0**true_opt)


def test_fit_unsorted_diverged_edge_cases():
    # unsorted input and diverged (inf/nan) points are handled
    opt = fit_optimum([-4, -6, -5, -3, -2], [2.1, 2.5, 2.2, math.inf, math.nan])
    assert opt.at_edge and not opt.fitted and opt.log2 == -4  # last finite point: edge
    opt = fit_optimum([-6, -5, -4, -3], [2.5, 2.0, 2.2, math.inf])
    assert opt.fitted and -5.5 < opt.log2 < -4.5
    # minimum at the grid edge
    edge = fit_optimum([-3, -2, -1], [1.0, 2.0, 3.0])
    assert edge.at_edge and edge.log2 == -3
    with pytest.raises(ValueError, match="every run diverged"):
        fit_optimum([-3, -2, -1], [math.inf] * 3)
    with pytest.raises(ValueError):
        fit_optimum([1, 2], [1.0])


def test_drift_and_grid():
    from hptransfer.tuning.sweep import Optimum

    opts = {256: Optimum(-6.5, 1.0, False, True), 64: Optimum(-7.25, 1.0, False, True)}
    assert drift(opts) == pytest.approx(0.75)
    # max - min over all widths: the middle width's optimum counts even when the ends agree
    opts[128] = Optimum(-5.5, 1.0, False, True)
    assert drift(opts) == pytest.approx(1.75)
    assert [math.log2(v) for v in log2_grid(-3, -1, 0.5)] == [-3, -2.5, -2, -1.5, -1]


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"widths": (128, 64)}, "strictly increasing"),
        ({"widths": (64, 64)}, "strictly increasing"),
        ({"grid": (0.01,)}, "at least 3"),
        ({"grid": (0.01, 0.001, 0.1)}, "strictly increasing"),
        ({"grid": (-1.0, 0.1, 1.0)}, "positive"),
        ({"seeds": ()}, "no seeds"),
    ],
)
def test_bad_spec(kwargs, match):
    spec = SweepSpec(task="regression", **{"grid": (1e-3, 1e-2, 1e-1), **kwargs})
    with pytest.raises(ConfigError, match=match):
        spec.validate()


def test_factory_ignoring_width_is_refused(tmp_path):
    spec = SweepSpec(task="regression", widths=(32, 64), grid=(1e-3, 1e-2, 1e-1), steps=1)
    with pytest.raises(ConfigError, match="ignores width"):
        run_sweep(
            spec, tmp_path, factory=lambda w: nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 1)), progress=False
        )


# -- running, resume, divergence ---------------------------------------------------------------
def _fake_train(calls):
    """A deterministic stand-in for a training run: loss is a parabola in log2 lr whose optimum
    moves with width; lr >= 2^-2 diverges."""

    def run(width, value, seed):
        calls.append((width, value, seed))
        x = math.log2(value)
        if x >= -2:
            return SimpleNamespace(val_loss=math.inf, diverged=True, steps=3)
        opt = -6 + 0.25 * math.log2(width / 32)
        return SimpleNamespace(val_loss=1.0 + 0.05 * (x - opt) ** 2 + 0.001 * seed, diverged=False, steps=10)

    return run


def test_resume_after_kill_repeats_no_finished_run(tmp_path):
    spec = SweepSpec(
        task="regression",
        rule="mup",
        widths=(32, 64, 128),
        grid=log2_grid(-8, -2),
        seeds=(0,),
        extra_seeds={128: (1,)},
        steps=10,
    )
    total = len(spec.points())
    assert total == 3 * 7 + 7
    calls: list = []
    run = _fake_train(calls)

    class Killed(BaseException):
        pass

    def kill_after(n):
        def hook(rec):
            if len(calls) >= n:
                raise Killed

        return hook

    with pytest.raises(Killed):
        run_sweep(spec, tmp_path, train_fn=run, on_run=kill_after(9), progress=False)
    assert len(calls) == 9
    first = list(calls)
    result = run_sweep(spec, tmp_path, train_fn=run, progress=False)
    assert len(calls) == total  # only the missing runs were trained
    assert not set(first) & set(calls[9:])
    assert len(result.records) == total
    # a third call trains nothing
    run_sweep(spec, tmp_path, train_fn=run, progress=False)
    assert len(calls) == total
    # diverged points are recorded and the fitted optima follow the fake law
    diverged = [r for r in result.records if r.diverged]
    assert {r.value for r in diverged} == {0.25} and len(diverged) == 4
    assert result.optima[32].log2 == pytest.approx(-6.0, abs=0.01)
    assert result.optima[128].log2 == pytest.approx(-5.5, abs=0.02)
    assert result.drift == pytest.approx(0.5, abs=0.03)
    data = json.loads((tmp_path / "sweep_lr.json").read_text())
    assert len(data["runs"]) == total and data["spec"]["rule"] == "mup"
    assert any(r["val_loss"] is None and r["diverged"] for r in data["runs"])
    assert (tmp_path / "sweep_lr.png").stat().st_size > 0 and (tmp_path / "sweep_lr.svg").exists()
    assert (tmp_path / "sweep_lr.csv").read_text().count("\n") == total + 1


def test_rerun_with_a_wider_grid_and_another_seed_adds_only_the_new_runs(tmp_path):
    """Issue 11: the same --out with a wider grid or another seed used to fail with Optuna's
    "CategoricalDistribution does not support dynamic value space"."""
    calls: list = []
    run = _fake_train(calls)
    spec = SweepSpec(task="regression", rule="mup", widths=(32, 64), grid=log2_grid(-8, -6), steps=10)
    run_sweep(spec, tmp_path, train_fn=run, progress=False, plot=False)
    assert len(calls) == 6
    wider = replace(spec, grid=log2_grid(-9, -5), seeds=(0, 1))
    result = run_sweep(wider, tmp_path, train_fn=run, progress=False, plot=False)
    assert len(calls) == 2 * 5 * 2  # the 6 runs done before are not repeated
    assert len(set(calls)) == len(calls) and len(result.records) == 20
    import optuna

    study = optuna.load_study(
        study_name="sweep-regression-mup-lr", storage=f"sqlite:///{tmp_path / 'sweep.db'}"
    )
    assert len(study.trials) == 20 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_changed_settings_refused(tmp_path):
    spec = SweepSpec(task="regression", widths=(32, 64), grid=log2_grid(-6, -4), steps=10)
    run_sweep(spec, tmp_path, train_fn=_fake_train([]), progress=False, plot=False)
    from dataclasses import replace

    with pytest.raises(ConfigError, match="other settings"):
        run_sweep(replace(spec, steps=20), tmp_path, train_fn=_fake_train([]), progress=False)


def test_real_sweep_small(tmp_path):
    """A tiny real sweep of the MLP: runs, finite losses, a divergent point kept."""
    spec = SweepSpec(
        task="regression",
        rule="mup",
        widths=(32, 64),
        grid=(2.0**-8, 2.0**-5, 2.0**12),
        steps=15,
        batch_size=16,
    )
    result = run_sweep(spec, tmp_path, progress=False)
    assert len(result.records) == 6
    assert all(math.isfinite(r.val_loss) for r in result.records if r.value < 1)
    assert all(r.diverged and math.isinf(r.val_loss) for r in result.records if r.value > 1)


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_bad_input_exit_2(tmp_path):
    runner = CliRunner()
    for args, text in [
        (["--widths", "128,64"], "strictly increasing"),
        (["--grid=-3"], "at least 3"),
        (["--grid", "x:y"], "log2 exponents"),
        (["--param", "momentum"], "lr or wd"),
        (["--widths", "60,64"], "head_dim"),
        (["--grid="], "log2 exponents"),  # empty: an error, not the default grid
        (["--grid=0:inf"], "outside -1000..1000"),
        (["--grid=1024:1026"], "outside -1000..1000"),
        (["--grid=2000,2001,2002"], "outside -1000..1000"),
        (["--grid=-6:-4:0.00001"], "at most 1000"),
        # storage through hptransfer.tuning.storage: one line, password masked
        (["--storage", "foo://me:hunter2@db/x"], "unknown storage scheme 'foo' in foo://me:***@db/x"),
        (["--storage", f"sqlite:///{tmp_path}/no/such/dir/s.db"], "does not exist"),
    ]:
        res = runner.invoke(app, ["sweep", *args, "--out", str(tmp_path)])
        assert res.exit_code == 2, (args, res.output)
        assert text in " ".join(res.output.split())
        assert "Traceback" not in res.output and "hunter2" not in res.output


def test_cli_out_that_is_a_file_is_one_line(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    args = ["sweep", "--task", "regression", "--widths", "16,32"]
    res = CliRunner().invoke(app, [*args, "--out", str(target)])
    assert res.exit_code == 2 and f"--out {target} is a file" in res.stderr
    assert "Traceback" not in res.output and target.read_text() == "not a folder"


def test_cli_ctrl_c_is_one_line_with_the_resume_hint(tmp_path, monkeypatch):
    (tmp_path / "sweep_kbd.py").write_text(
        "import torch\nfrom hptransfer.models import MLP\n\n"
        "def make(width):\n"
        "    if torch.empty(1).device.type != 'meta':\n        raise KeyboardInterrupt\n"
        "    return MLP(width)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["sweep", "--task", "regression", "--model", "sweep_kbd:make", "--widths", "16,32", "--steps", "2"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 130
    kept = f"{tmp_path / 'o'}/sweep.db"
    assert res.stderr.strip().splitlines() == [
        f"error: interrupted; finished runs are kept in {kept}; to go on: hptransfer sweep "
        f"--widths 16,32 --task regression --steps 2 --model sweep_kbd:make --out {tmp_path / 'o'}"
    ]


def test_cli_all_runs_diverged_is_an_error(tmp_path):
    args = ["sweep", "--task", "regression", "--widths", "16,32", "--grid=12:14", "--steps", "3"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert res.exit_code == 1 and "every run diverged" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    data = json.loads((tmp_path / "sweep_lr.json").read_text())  # the runs are kept
    assert len(data["runs"]) == 6 and all(r["diverged"] for r in data["runs"])


def test_cli_runs_json(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "sweep",
            "--task",
            "regression",
            "--widths",
            "32,64",
            "--grid=-8:-6",
            "--steps",
            "5",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert len(data["runs"]) == 6 and set(data["optima"]) <= {"32", "64"}


# -- the transfer benchmark's smoke mode -------------------------------------------------------
def test_transfer_benchmark_quick(tmp_path, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    pytest.importorskip(
        "mup", reason="the transfer benchmark's baseline needs the mup package (.ci/run installs it)"
    )
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer.py"
    spec = importlib.util.spec_from_file_location("bench_transfer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--no-progress", "--figures", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("lr drift (max-min log2 lr*, widths 16..32, 2x)")
    assert "mup package" in lines[-1] and "wd drift" in lines[-1]
    assert (tmp_path / "transfer_lr.png").stat().st_size > 0
    assert (tmp_path / "transfer_wd.png").stat().st_size > 0


def test_resume_after_sigkill(tmp_path):
    """A sweep process killed with SIGKILL mid-run (a RUNNING trial left behind) resumes
    without retraining any finished run."""
    import subprocess
    import sys
    import textwrap

    log = tmp_path / "calls.txt"
    script = textwrap.dedent(f"""
        import math, os, signal
        from types import SimpleNamespace
        from hptransfer.tuning.sweep import SweepSpec, log2_grid, run_sweep
        def run(width, value, seed):
            with open({str(log)!r}, "a") as fh:
                fh.write(f"{{width}} {{value}} {{seed}}\\n")
            if sum(1 for _ in open({str(log)!r})) == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return SimpleNamespace(val_loss=1 + (math.log2(value) + 5) ** 2, diverged=False, steps=1)
        spec = SweepSpec(task="regression", widths=(32, 64), grid=log2_grid(-7, -3), steps=1)
        run_sweep(spec, {str(tmp_path)!r}, train_fn=run, progress=False, plot=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    killed = log.read_text().splitlines()
    assert len(killed) == 5  # 4 finished, the 5th killed mid-run
    calls: list = []

    def run(width, value, seed):
        calls.append(f"{width} {value} {seed}")
        return SimpleNamespace(val_loss=1 + (math.log2(value) + 5) ** 2, diverged=False, steps=1)

    spec = SweepSpec(task="regression", widths=(32, 64), grid=log2_grid(-7, -3), steps=1)
    result = run_sweep(spec, tmp_path, train_fn=run, progress=False, plot=False)
    assert len(calls) == 10 - 4  # the killed run is redone, the 4 finished ones are not
    assert calls[0] == killed[4] and not set(calls) & set(killed[:4])
    assert len(result.records) == 10
    assert result.optima[32].log2 == pytest.approx(-5.0)
