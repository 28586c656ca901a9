"""Many workers on one study, on a real PostgreSQL server (``OPTUNA_PG_URL``, started by
``.ci/pg.sh`` in CI), and crashed workers recovered by Optuna's heartbeat.

Each worker is a separate Python process (``python this_file.py worker ...``) that builds its own
storage from the URL, as workers on other machines would.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hptransfer.scaling import ProxyConfig
from hptransfer.tuning import Range, SearchSpace, StorageError, make_storage, open_study

PG_URL = os.environ.get("OPTUNA_PG_URL")
CFG = ProxyConfig(name="w", base_width=64, head_dim=16)
SPACE = SearchSpace({"lr": Range(2.0**-12, 2.0**-2), "weight_decay": Range(1e-3, 1.0)})
HERE = Path(__file__).resolve()


def _pg_url() -> str:
    if not PG_URL:
        pytest.skip(
            "OPTUNA_PG_URL is not set: start PostgreSQL with `source .ci/pg.sh; pg_up` "
            "(CI does) to run the multi-worker tests"
        )
    try:  # set but broken must read as a failure, never as a skip: CI's database is down
        make_storage(PG_URL, heartbeat_interval=None)
    except StorageError as exc:
        pytest.fail(f"OPTUNA_PG_URL is set but PostgreSQL is unusable: {exc}")
    return PG_URL


def test_set_but_unreachable_url_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PG_URL", "postgresql+psycopg://u:pw@127.0.0.1:1/x")
    with pytest.raises(pytest.fail.Exception, match="OPTUNA_PG_URL is set but PostgreSQL is unusable"):
        _pg_url()


def _open(url: str, name: str):
    return open_study(name, CFG, storage=url, space=SPACE, heartbeat_interval=1, grace_period=2, max_retry=1)


def _spawn(url: str, name: str, n_trials: int, mode: str, marker: Path | None = None) -> subprocess.Popen:
    args = [sys.executable, str(HERE), "worker", url, name, str(n_trials), mode, str(marker or "")]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs: list[subprocess.Popen], timeout: float = 120) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out


@pytest.mark.parametrize("backend", ["postgresql", "journal"])
def test_four_workers_25_trials_each_exactly_100(backend, tmp_path):
    url = _pg_url() if backend == "postgresql" else f"journal://{tmp_path / 'study.log'}"
    name = f"workers-{uuid.uuid4().hex[:8]}"
    _open(url, name)  # created once with its attributes; workers open it
    start = time.perf_counter()
    _wait([_spawn(url, name, 25, "normal") for _ in range(4)])
    elapsed = time.perf_counter() - start
    study = _open(url, name)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 100
    assert [t.state.name for t in trials].count("COMPLETE") == 100
    assert sorted(t.number for t in trials) == list(range(100))  # unique, none lost
    storage = make_storage(url, heartbeat_interval=None)  # public Optuna API, no private ids
    study_id = storage.get_study_id_from_name(name)
    ids = {storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials}
    assert len(ids) == 100  # one storage row per trial
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 4 and all(sum(t.user_attrs["worker"] == w for t in trials) == 25 for w in workers)
    print(f"{backend}: 4 workers x 25 trials in {elapsed:.1f} s")


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_killed_worker_trial_fails_by_heartbeat_and_is_retried(backend, tmp_path):
    url = _pg_url() if backend == "postgresql" else f"sqlite:///{tmp_path / 'hb.db'}"
    name = f"heartbeat-{uuid.uuid4().hex[:8]}"
    _open(url, name)
    marker = tmp_path / "hanging"
    victim = _spawn(url, name, 1, "hang", marker)
    deadline = time.time() + 60
    while not marker.exists():  # the victim is inside its trial
        assert victim.poll() is None, victim.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    hung_number = int(marker.read_text())
    study = _open(url, name)
    assert study.trials[hung_number].state.name == "RUNNING"  # nobody has noticed yet
    time.sleep(3.5)  # > grace period (2 s) since its last heartbeat
    _wait([_spawn(url, name, 4, "normal")])
    study = _open(url, name)
    trials = study.get_trials(deepcopy=False)
    hung = trials[hung_number]
    assert hung.state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == hung.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state.name == "COMPLETE" and retry.params == hung.params
    assert [t.state.name for t in trials].count("COMPLETE") == 4
    assert len(trials) == 5


# -- the worker process -----------------------------------------------------------------------------
def _worker(url: str, name: str, n_trials: int, mode: str, marker: str) -> None:
    import optuna

    from hptransfer.tuning import TransferObjective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    me = f"{os.getpid()}"
    state = {"hang": mode == "hang"}

    def train(plan, trial):
        trial.set_user_attr("worker", me)
        if state["hang"]:
            state["hang"] = False
            Path(marker).write_text(str(trial.number))
            time.sleep(600)  # killed here
        time.sleep(0.01)
        return (math.log2(plan.base_lr) + 8) ** 2

    study = _open(url, name)
    study.optimize(TransferObjective(train, CFG, space=SPACE), n_trials=n_trials)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    sys.path.insert(0, str(HERE.parent))
    _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
