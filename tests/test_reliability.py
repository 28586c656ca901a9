"""Faults (issue 11): workers started together, workers killed mid-trial, Ctrl-C, unwritable or
full output folders.

PostgreSQL variants run when ``OPTUNA_PG_URL`` is set (CI starts a server with ``.ci/pg.sh``) and
fail, not skip, when it is set but the server is unusable.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hptransfer.scaling import ProxyConfig
from hptransfer.tuning import Range, SearchSpace, StorageError, make_storage, open_study

PG_URL = os.environ.get("OPTUNA_PG_URL")
CFG = ProxyConfig(name="r", base_width=64, head_dim=16)
SPACE = SearchSpace({"lr": Range(2.0**-12, 2.0**-2)})
HERE = Path(__file__).resolve()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


def _url(backend: str, tmp_path: Path, name: str = "r.db") -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / name}"
    if not PG_URL:
        pytest.skip("OPTUNA_PG_URL is not set: `source .ci/pg.sh; pg_up` (CI does) runs these on PostgreSQL")
    try:  # set but broken is a failure, never a skip
        make_storage(PG_URL, heartbeat_interval=None)
    except StorageError as exc:
        pytest.fail(f"OPTUNA_PG_URL is set but PostgreSQL is unusable: {exc}")
    return PG_URL


# -- workers started together on a new study --------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_20_rounds_of_workers_started_together_on_a_new_study_never_fail(backend, tmp_path):
    """Each round: 3 workers (own storage objects, released together by a barrier) open a study
    that does not exist yet; on SQLite in a database file that does not exist yet either (the
    table-creation race). Zero failures allowed."""
    failures: list[str] = []
    for round_ in range(20):
        url = _url(backend, tmp_path, f"race{round_}.db")
        name = f"race-{uuid.uuid4().hex[:8]}"
        gate = threading.Barrier(3)

        def worker(
            url: str = url, name: str = name, gate: threading.Barrier = gate, round_: int = round_
        ) -> None:
            gate.wait()
            try:
                study = open_study(name, CFG, storage=url, space=SPACE, extra_attrs={"model": "mlp"})
                assert study.user_attrs["hptransfer.base_width"] == 64
            except Exception as exc:  # collected: a thread's exception would be lost
                failures.append(f"round {round_}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert failures == []


@pytest.mark.slow
def test_two_sweeps_started_together_on_one_out_both_finish(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--task", "regression", "--widths", "16,32", "--grid=-8:-6", "--steps", "1"]
    cmd = [sys.executable, "-m", "hptransfer.cli.entry", *args, "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        so, se = p.communicate(timeout=240)
        assert p.returncode == 0 and "Traceback" not in se, se[-2000:]
        assert "results:" in so
    assert (out / "sweep_lr.json").exists()


# -- a worker killed mid-trial while another runs ----------------------------------------------------
def _spawn_worker(url: str, name: str, mode: str, marker: Path) -> subprocess.Popen:
    args = [sys.executable, str(HERE), "worker", url, name, mode, str(marker)]
    return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while not path.exists() or not path.read_text():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_workers_trial_is_failed_and_retried_by_a_worker_still_in_its_own_trial(backend, tmp_path):
    """Heartbeat 1 s, grace 3 s. The victim is SIGKILLed inside its trial; the survivor is in one
    long trial the whole time, so only its reaper thread can notice. The dead trial is FAIL within
    grace + a few heartbeats, and the survivor's next trial is its retry, with the same params."""
    import optuna

    url = _url(backend, tmp_path, "hb.db")
    name = f"hb-{uuid.uuid4().hex[:8]}"
    _open(url, name)
    victim = _spawn_worker(url, name, "hang", tmp_path / "victim")
    hung = int(_wait_for(tmp_path / "victim", victim))
    survivor = _spawn_worker(url, name, "long", tmp_path / "survivor")
    _wait_for(tmp_path / "survivor", survivor)  # inside its long trial
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = time.time()
    study = optuna.load_study(study_name=name, storage=make_storage(url, heartbeat_interval=None))
    while study.trials[hung].state.name == "RUNNING":
        assert time.time() - killed_at < 3 + 6, "the dead worker's trial was not failed within the grace"
        time.sleep(0.2)
    assert study.trials[hung].state.name == "FAIL"
    assert survivor.poll() is None  # still in its first trial: the reaper did it
    (tmp_path / "go").write_text("1")  # let the survivor finish; its next trial is the retry
    out, _ = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, out
    trials = study.get_trials(deepcopy=False)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == hung]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == trials[hung].params


def _open(url: str, name: str):  # type: ignore[no-untyped-def]
    return open_study(name, CFG, storage=url, space=SPACE, heartbeat_interval=1, grace_period=3, max_retry=1)


def _worker(url: str, name: str, mode: str, marker: str) -> None:
    import optuna

    from hptransfer.tuning import TransferObjective
    from hptransfer.tuning.storage import reap_stale_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    go = Path(marker).parent / "go"
    state = {"first": True}

    def train(plan, trial):  # type: ignore[no-untyped-def]
        if state["first"]:
            state["first"] = False
            Path(marker).write_text(str(trial.number))
            if mode == "hang":
                time.sleep(600)  # SIGKILLed here
            deadline = time.time() + 60
            while not go.exists() and time.time() < deadline:
                time.sleep(0.05)
        return plan.base_lr

    study = _open(url, name)
    with reap_stale_trials(study, 1):
        study.optimize(TransferObjective(train, CFG, space=SPACE), n_trials=2 if mode == "long" else 1)


# -- Ctrl-C ------------------------------------------------------------------------------------------
def _interrupt_when(cmd: list[str], ready, cwd: Path, timeout: float = 180) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.slow
def test_tune_ctrl_c_is_one_line_and_the_printed_command_finishes_the_study(tmp_path):
    import optuna

    db = tmp_path / "t.db"
    url = f"sqlite:///{db}"
    # trials long enough (about a second each) that the Ctrl-C, sent once one has finished,
    # lands in the next one even on a busy machine, not after the study ended
    args = ["tune", "--model", "mlp", "--width", "16", "--trials", "3", "--steps", "1500"]
    args += ["--storage", url, "--study", "s", "--sampler-seed", "0"]

    def finished() -> int:
        if not db.exists():
            return 0
        try:
            st = optuna.load_study(study_name="s", storage=url)
        except Exception:
            return 0
        return sum(t.state.name == "COMPLETE" for t in st.trials)

    code, err = _interrupt_when(
        [sys.executable, "-m", "hptransfer.cli.entry", *args], lambda: finished() >= 1, tmp_path
    )
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1 and "Traceback" not in err, err
    m = re.search(r"to go on: (hptransfer tune .*)$", lines[0])
    assert m and "finished trials kept in study s" in lines[0], lines[0]
    again = shlex.split(m.group(1))
    assert again[again.index("--total-trials") + 1] == "3" and "--trials" not in again
    assert again[again.index("--storage") + 1] == url and again[again.index("--steps") + 1] == "1500"
    res = subprocess.run(
        [sys.executable, "-m", "hptransfer.cli.entry", *again[1:]],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert finished() == 3  # topped up to the goal of the interrupted run, not 3 more


def _entry(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "hptransfer.cli.entry", *args]


def _resume_line(err: str, pattern: str) -> list[str]:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    m = re.search(pattern, lines[0])
    assert m, lines[0]
    return shlex.split(m.group(1))


@pytest.mark.slow
def test_sweep_ctrl_c_is_one_line_and_the_printed_command_finishes_the_sweep(tmp_path):
    import optuna

    out = tmp_path / "sw"
    args = ["sweep", "--task", "regression", "--widths", "16,32", "--grid=-8:-6", "--steps", "400"]

    def complete() -> int:
        try:
            study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'sweep.db'}")
        except Exception:
            return 0
        return sum(t.state.name == "COMPLETE" for t in study.trials)

    code, err = _interrupt_when(_entry([*args, "--out", str(out)]), lambda: complete() >= 1, tmp_path)
    assert code == 130
    again = _resume_line(err, r"to go on: (hptransfer sweep .*)$")
    assert sorted(again[2:]) == sorted([*args[1:], "--out", str(out)])  # the user's options, as given
    kept = complete()
    assert 1 <= kept < 6
    res = subprocess.run(_entry(again[1:]), cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'sweep.db'}")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6  # the kept runs were not redone


@pytest.mark.slow
def test_stn_ctrl_c_is_one_line_and_the_printed_command_resumes(tmp_path):
    out = tmp_path / "stn"
    # long enough (about 190 steps) that the Ctrl-C, sent once the first checkpoint (step 5) is
    # on disk, lands in training even on a busy machine; one after training is reported too
    args = ["stn", "--epochs", "24", "--checkpoint-every", "5", "--out", str(out)]
    code, err = _interrupt_when(_entry(args), lambda: (out / "checkpoint.pt").exists(), tmp_path)
    assert code == 130
    again = _resume_line(err, r"Resume with: (hptransfer stn .*)$")
    assert "--resume" in again
    assert not list(out.glob("*.tmp"))
    res = subprocess.run(_entry(again[1:]), cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (out / "hyper.json").exists() and (out / "proxy.toml").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["suggest"], "Missing option '--width'"),
        (["tune", "--trials", "x"], "Invalid value for '--trials'"),
        (["sweep", "--bogus"], "No such option: --bogus"),
        (["bogus"], "No such command 'bogus'"),
        (["stn", "--out"], "Option '--out' requires an argument"),
    ],
)
def test_usage_errors_are_one_line_naming_the_help_page(args, message):
    from typer.testing import CliRunner

    from hptransfer.cli.main import app

    res = CliRunner().invoke(app, args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert lines[0].endswith("--help)") and "Usage:" not in res.output


def test_bare_command_still_shows_the_help():
    from typer.testing import CliRunner

    from hptransfer.cli.main import app

    res = CliRunner().invoke(app, [])
    assert "suggest" in res.stdout and "tune" in res.stdout and "error" not in res.output


# -- output folders that cannot be written, disks that fill up ------------------------------------
_CHEAP = {  # each would train for a while if the --out check did not come first
    "diagnose": ["diagnose", "--model", "mlp", "--widths", "16,32", "--steps", "50"],
    "sweep": ["sweep", "--task", "regression", "--widths", "16,32", "--grid=-8:-6", "--steps", "50"],
    "tune": ["tune", "--model", "mlp", "--width", "16", "--trials", "2", "--steps", "50"],
    "stn": ["stn", "--epochs", "2"],
}


@pytest.mark.parametrize("how", ["file", "below-a-file", "read-only", "full"])
@pytest.mark.parametrize("command", sorted(_CHEAP))
def test_unwritable_out_is_one_line_before_training(command, how, tmp_path, monkeypatch):
    import errno
    import tempfile

    from typer.testing import CliRunner

    from hptransfer.cli.main import app

    monkeypatch.chdir(tmp_path)  # tune's default storage lands here (it must not be made)
    out = tmp_path / "out"
    if how == "file":
        out.write_text("mine")
    elif how == "below-a-file":
        (tmp_path / "f").write_text("mine")
        out = tmp_path / "f" / "out"
    else:
        real = tempfile.mkstemp

        def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
            if how == "read-only":
                raise OSError(errno.EROFS, "Read-only file system")
            fd, name = real(*args, **kwargs)  # an empty file fits on a full disk; its bytes do not
            os.close(fd)
            return os.open("/dev/full", os.O_WRONLY), name

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    before = sorted(tmp_path.rglob("*"))
    start = time.perf_counter()
    res = CliRunner().invoke(app, [*_CHEAP[command], "--out", str(out)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "Traceback" not in res.output, res.stderr
    if how in ("read-only", "full"):
        assert ("Read-only" if how == "read-only" else "No space left") in lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even the folder
    assert time.perf_counter() - start < 20  # refused before any training


def test_sweep_disk_full_mid_run_is_one_line_and_keeps_the_runs(tmp_path, monkeypatch):
    import errno

    import optuna
    from typer.testing import CliRunner

    import hptransfer.tuning.sweep as sweep_mod
    from hptransfer.cli.main import app

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sweep_mod, "save_results", full)
    out = tmp_path / "o"
    args = ["sweep", "--task", "regression", "--widths", "16,32", "--grid=-8:-6", "--steps", "2"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "hptransfer sweep" in lines[0]
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'sweep.db'}")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6  # every run kept


@pytest.fixture
def tiny_disk(tmp_path):  # type: ignore[no-untyped-def]
    """``tiny_disk(kib)``: a tmpfs of that size (root only; skipped where it cannot be mounted)."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        disk = tmp_path / f"tiny{len(mounted)}"
        disk.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(disk)]
        made = subprocess.run(cmd, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(
                f"cannot mount a small tmpfs here ({made.stderr.strip() or 'not root'}); the "
                "monkeypatched full-disk tests cover the same paths"
            )
        mounted.append(disk)
        return disk

    yield make
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)  # lazy: a test may hold the db open


def test_sweep_on_a_real_full_disk_is_one_line_and_keeps_the_runs(tiny_disk):
    import optuna

    out = tiny_disk(200) / "sw"  # room for the database, not for the figures
    args = ["sweep", "--task", "regression", "--widths", "16,32", "--grid=-8:-6", "--steps", "2"]
    res = subprocess.run(_entry([*args, "--out", str(out)]), env=ENV, capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'sweep.db'}")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6
    assert not list(out.glob("*.tmp"))  # every result file is whole or absent, none half-written
    if (out / "sweep_lr.json").exists():
        json.loads((out / "sweep_lr.json").read_text())


@pytest.mark.slow
def test_stn_on_a_real_full_disk_keeps_the_last_checkpoint_and_leaves_no_tmp(tiny_disk):
    import torch

    out = tiny_disk(2900) / "stn"  # one ~1.9 MB checkpoint fits, a second beside it does not
    args = ["stn", "--epochs", "3", "--checkpoint-every", "5", "--out", str(out)]
    res = subprocess.run(_entry(args), env=ENV, capture_output=True, text=True)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "No space left on device" in lines[-1] and "--resume" in lines[-1], lines
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 5


def test_stn_disk_full_at_a_checkpoint_keeps_the_last_one_and_leaves_no_tmp(tmp_path, monkeypatch):
    """The second checkpoint's bytes do not reach the disk (ENOSPC at fsync, as on a full disk)."""
    import errno

    from typer.testing import CliRunner

    import hptransfer.stn.tuner as tuner_mod
    from hptransfer.cli.main import app

    real, calls = os.fsync, []

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("checkpoint.pt.tmp"):
            calls.append(fd)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(tuner_mod.os, "fsync", fsync)
    out = tmp_path / "stn"
    res = CliRunner().invoke(app, ["stn", "--epochs", "3", "--checkpoint-every", "5", "--out", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "--resume" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]  # no checkpoint.pt.tmp
    assert tuner_mod.load_checkpoint(out / "checkpoint.pt")["step"] == 5  # the last good one, intact


@pytest.mark.parametrize("content", [b"garbage{{{\n", b'{"a": 1}\n', b"[1, 2]\n", b'{"op_code": 0}\n'])
def test_a_journal_file_that_is_not_a_journal_is_one_line(content, tmp_path):
    from hptransfer.tuning import load_study

    log = tmp_path / "study.log"
    log.write_bytes(content)
    with pytest.raises(StorageError, match="is not an Optuna journal log"):
        load_study(f"journal:///{log}")
    with pytest.raises(StorageError, match="is not an Optuna journal log"):
        open_study("s", CFG, storage=f"journal:///{log}")
    assert log.read_bytes() == content  # left as it was


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    _worker(*sys.argv[2:6])
