"""Optuna integration: base-unit spaces, self-explaining studies, the objective wrapper, width
ladder, transfer of the best trial, storage URLs. Quadratic objectives stand in for training."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import optuna
import pytest

from hptransfer.scaling import ProxyConfig, default_config, suggest
from hptransfer.tuning import (
    EmptyStudyError,
    Range,
    SearchSpace,
    StorageError,
    StudyMismatchError,
    TransferObjective,
    WidthLadder,
    best_config,
    best_plan,
    config_from_study,
    default_space,
    make_storage,
    mask_url,
    normalize_url,
    open_study,
    reporter,
    study_config,
    study_info,
    transfer_objective,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)

CFG = ProxyConfig(name="t", base_width=128, head_dim=32, lr=2.0**-8, weight_decay=0.1)
LR_SPACE = SearchSpace({"lr": Range(2.0**-14, 2.0**-2), "weight_decay": Range(1e-3, 1.0)})
OPT_LOG2_LR = -9.0  # the quadratics' optimum base lr (log2) at the base width


def quad(plan, trial):
    """Loss with its optimum at base lr 2^-9 and wd 0.03, whatever the width (what transfer means)."""
    base_lr = plan["hidden"].lr * plan.width_mult  # muP: hidden lr = base lr / m
    base_wd = plan["hidden"].weight_decay / plan.width_mult  # wd-linear: wd = base wd * m
    return 1.0 + (math.log2(base_lr) - OPT_LOG2_LR) ** 2 + 0.1 * (math.log10(base_wd) + 1.5) ** 2


def _sqlite(tmp_path, name="s.db"):
    return f"sqlite:///{tmp_path / name}"


# -- space -> plan --------------------------------------------------------------------------------
def test_space_maps_trial_to_config_and_any_width():
    trial = optuna.trial.FixedTrial({"lr": 2.0**-7, "weight_decay": 0.05})
    params = LR_SPACE.sample(trial)
    cfg = LR_SPACE.config(CFG, params)
    assert (cfg.lr, cfg.weight_decay) == (2.0**-7, 0.05)
    assert cfg.base_width == CFG.base_width and cfg.init_std == CFG.init_std  # untouched fields stay
    for width in (128, 1024, 4096):
        plan = suggest(cfg, width)
        m = width / 128
        assert plan["hidden"].lr == pytest.approx(2.0**-7 / m)
        assert plan["hidden"].weight_decay == pytest.approx(0.05 * m)  # default rule: wd-linear
        assert plan["vector"].lr == pytest.approx(2.0**-7)


def test_default_space_is_log_scale_and_rejects_bad_ranges():
    space = default_space(attn_mult=None)
    assert "attn_mult" not in space and set(space) == {
        "lr",
        "weight_decay",
        "vector_lr_mult",
        "init_scale",
        "embed_init_scale",
        "output_mult",
    }
    assert all(r.log for r in space.ranges.values())
    with pytest.raises(ValueError, match="low > 0"):
        Range(0.0, 1.0)
    with pytest.raises(ValueError, match="cannot tune 'base_width'"):
        SearchSpace({"base_width": Range(1, 2)})
    assert SearchSpace.from_dict(space.to_dict()) == space


# -- study attributes and refusal -------------------------------------------------------------------
def test_study_stores_rule_base_width_and_config(tmp_path):
    open_study(
        "s", CFG, storage=_sqlite(tmp_path), space=LR_SPACE, proxy_width=256, extra_attrs={"model": "toy"}
    )
    again = optuna.load_study(study_name="s", storage=_sqlite(tmp_path))  # plain Optuna reads it
    info = study_info(again)
    assert info["rule"] == "mup-wd-linear" and info["base_width"] == 128
    assert info["proxy_width"] == 256 and info["model"] == "toy"
    assert info["space"]["lr"]["log"] is True
    assert study_config(again) == CFG


def test_reopen_under_other_rule_or_base_width_is_refused(tmp_path):
    url = _sqlite(tmp_path)
    open_study("s", CFG, storage=url, space=LR_SPACE)
    open_study("s", CFG, storage=url, space=LR_SPACE)  # same units: fine
    with pytest.raises(
        StudyMismatchError,
        match=r"rule mup-wd-linear at base width 128.*"
        r"rule mup-wd-sqrt at base width 128.*--force",
    ):
        open_study("s", CFG.with_rule("mup-wd-sqrt"), storage=url)
    with pytest.raises(StudyMismatchError, match="base width 256"):
        open_study("s", replace(CFG, base_width=256), storage=url)
    forced = open_study("s", replace(CFG, base_width=256), storage=url, force=True)
    assert study_info(forced)["base_width"] == 128  # the study keeps the units it was made in
    # trials in other units say so, and are not carried over as if they were in the study's units
    forced.optimize(TransferObjective(quad, replace(CFG, base_width=256), space=LR_SPACE), n_trials=2)
    assert all(t.user_attrs["hptransfer.run"]["base_width"] == 256 for t in forced.trials)
    with pytest.raises(EmptyStudyError):
        best_config(forced)


# -- the objective wrapper ------------------------------------------------------------------------
def test_objective_tunes_and_best_trial_transfers(tmp_path):
    study = open_study(
        "q", CFG, storage=_sqlite(tmp_path), space=LR_SPACE, sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(TransferObjective(quad, CFG, width=128, space=LR_SPACE), n_trials=30)
    assert "hptransfer.run" not in study.trials[0].user_attrs  # the study's attributes say it all
    best = best_config(study)
    assert abs(math.log2(best.lr) - OPT_LOG2_LR) < 1.0
    plan = best_plan(study, 2048)
    assert plan.width == 2048
    assert plan["hidden"].lr == pytest.approx(study.best_params["lr"] / 16)
    assert plan["hidden"].weight_decay == pytest.approx(study.best_params["weight_decay"] * 16)
    # the transferred plan is as good at 2048 as the best trial was at 128
    assert quad(plan, None) == pytest.approx(study.best_value)
    # top-k: log-space median of the k best trials
    top = sorted((t for t in study.trials if t.value is not None), key=lambda t: t.value)[:3]
    med = sorted(t.params["lr"] for t in top)[1]
    assert best_config(study, top_k=3).lr == pytest.approx(med)
    # the function the CLI's `suggest --study` calls
    assert config_from_study(_sqlite(tmp_path), "q") == best


def test_trials_run_at_chosen_width_with_steps_and_config_keywords():
    seen = []

    @transfer_objective(CFG, width=512, space=LR_SPACE, steps=7)
    def train(plan, trial, *, steps, config):
        seen.append((plan.width, steps, config.lr))
        return 1.0

    study = optuna.create_study()
    study.optimize(train, n_trials=2)
    assert [(w, s) for w, s, _ in seen] == [(512, 7), (512, 7)]
    assert [lr for *_, lr in seen] == [t.params["lr"] for t in study.trials]
    assert study.trials[0].user_attrs["hptransfer.run"]["widths"] == [512]


def test_nan_inf_and_exceptions_fail_the_trial_and_the_study_goes_on():
    values = iter([float("nan"), float("inf"), None, 2.0, 1.0])

    def train(plan, trial):
        v = next(values)
        if v is None:
            raise RuntimeError("CUDA out of memory (pretend)")
        return v

    study = optuna.create_study()
    study.optimize(TransferObjective(train, CFG, space=LR_SPACE), n_trials=5)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert "diverged" in study.trials[0].user_attrs["hptransfer.error"]
    assert "inf" in study.trials[1].user_attrs["hptransfer.error"]
    assert study.trials[2].user_attrs["hptransfer.error"] == "RuntimeError: CUDA out of memory (pretend)"
    assert "Traceback" in study.trials[2].user_attrs["hptransfer.traceback"]
    assert study.best_value == 1.0

    def boom(plan, trial):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        optuna.create_study().optimize(TransferObjective(boom, CFG, catch_errors=False), n_trials=1)


def test_reported_nan_fails_trial():
    def train(plan, trial):
        cb = reporter(trial)
        cb(1, 3.0)
        cb(2, float("nan"))
        return 1.0

    study = optuna.create_study()
    study.optimize(TransferObjective(train, CFG, space=LR_SPACE), n_trials=1)
    t = study.trials[0]
    assert t.state.name == "FAIL" and t.intermediate_values == {1: 3.0}
    assert "step 2" in t.user_attrs["hptransfer.error"]


def test_pruning_with_intermediate_values():
    """Steps as the resource: a curve worse than the median of earlier trials is stopped early."""
    steps_run = []

    def train(plan, trial):
        cb = reporter(trial)
        final = (math.log2(plan.base_lr) - OPT_LOG2_LR) ** 2
        for step in range(1, 11):
            steps_run.append(trial.number)
            cb(step, final + 10.0 / step)
        return final

    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    study.optimize(TransferObjective(train, CFG, space=LR_SPACE), n_trials=20)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, "some trials must be pruned"
    for t in pruned:
        assert max(t.intermediate_values) < 10  # stopped before the end
        assert steps_run.count(t.number) == max(t.intermediate_values)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(len(t.intermediate_values) == 10 for t in complete)
    # pruned trials were worse (at their last step) than the median completed curve there
    assert min(t.value for t in complete) <= min(
        t.intermediate_values[max(t.intermediate_values)] for t in pruned
    )


def test_hyperband_with_steps_as_resource():
    def train(plan, trial, *, steps):
        cb = reporter(trial)
        final = (math.log2(plan.base_lr) - OPT_LOG2_LR) ** 2
        for step in range(1, steps + 1):
            cb(step, final + 5.0 / step)
        return final

    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=27),
    )
    study.optimize(TransferObjective(train, CFG, space=LR_SPACE, steps=27), n_trials=30)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and sum(max(t.intermediate_values) < 27 for t in pruned) >= len(pruned) / 2
    assert study.best_trial.state.name == "COMPLETE"


def test_width_ladder_promotes_the_best_to_wider_widths():
    ladder = WidthLadder(widths=(32, 64, 128), steps=(10, 20, 40), reduction_factor=2)
    calls: dict[int, list[int]] = {}

    def train(plan, trial, *, steps):
        calls.setdefault(trial.number, []).append(plan.width)
        assert steps == {32: 10, 64: 20, 128: 40}[plan.width]
        return quad(plan, trial) + 1.0 / steps

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), pruner=ladder.pruner())
    study.optimize(TransferObjective(train, CFG, space=LR_SPACE, ladder=ladder), n_trials=24)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert complete and pruned
    assert all(calls[t.number] == [32, 64, 128] for t in complete)  # went through every rung
    assert all(calls[t.number][-1] < 128 for t in pruned)
    n_top = sum(ws[-1] == 128 for ws in calls.values())
    assert n_top < len(study.trials) / 2  # most trials never paid for the widest width
    assert set(complete[0].intermediate_values) == {1, 2, 4}


# -- storage URLs ----------------------------------------------------------------------------------
def test_normalize_url_and_journal_storage(tmp_path):
    assert normalize_url(None) == "sqlite:///hptransfer.db"
    assert normalize_url("a/b.db") == "sqlite:///a/b.db"
    assert normalize_url("x.log") == "journal://x.log"
    log = tmp_path / "j" / "study.log"
    study = open_study("j", CFG, storage=f"journal://{log}", space=LR_SPACE)
    study.optimize(TransferObjective(quad, CFG, space=LR_SPACE), n_trials=3)
    assert log.exists()
    assert len(optuna.load_study(study_name="j", storage=make_storage(str(log))).trials) == 3


def test_storage_errors_name_url_and_mask_password(tmp_path):
    assert mask_url("postgresql+psycopg://u:pw@h:1/d") == "postgresql+psycopg://u:***@h:1/d"
    with pytest.raises(StorageError, match=r"unknown storage scheme 'foo'.*foo://u:\*\*\*@h/d") as e:
        make_storage("foo://u:hunter2@h/d")
    assert "hunter2" not in str(e.value)
    with pytest.raises(StorageError, match=r"mysql\+pymysql://u:\*\*\*@h/d needs a database driver.*pymysql"):
        make_storage("mysql+pymysql://u:hunter2@h/d")
    with pytest.raises(StorageError, match="neither a URL"):
        make_storage("results.csv")
    with pytest.raises(StorageError, match="does not exist"):
        make_storage(f"sqlite:///{tmp_path}/missing/dir/x.db")


def test_unreachable_postgres_error_masks_password():
    pytest.importorskip("psycopg", reason="needs the PostgreSQL driver: pip install 'hptransfer[postgres]'")
    url = "postgresql+psycopg://optuna:hunter2@127.0.0.1:1/optuna"  # port 1: nothing listens
    with pytest.raises(StorageError, match=r"cannot open storage postgresql\+psycopg://optuna:\*\*\*@") as e:
        make_storage(url)
    assert "hunter2" not in str(e.value)


def test_empty_study_gives_clear_error(tmp_path):
    url = _sqlite(tmp_path)
    study = open_study("e", CFG, storage=url, space=LR_SPACE)
    with pytest.raises(EmptyStudyError, match="no finished trial"):
        best_plan(study, 1024)
    study.optimize(TransferObjective(lambda p, t: float("nan"), CFG, space=LR_SPACE), n_trials=2)
    with pytest.raises(EmptyStudyError, match=r"2 FAIL; trial failures: diverged: objective returned nan"):
        config_from_study(url, "e")
    with pytest.raises(ValueError, match=r"no study named 'nope'.*studies there: e"):
        config_from_study(url, "nope")
    assert default_config().base_width == 256  # unchanged global default


def test_tuning_imports_without_torch():
    code = (
        "import sys, hptransfer.tuning, hptransfer.tuning.transfer; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- workers started together ---------------------------------------------------------------------
def test_open_study_waits_for_attributes_another_worker_is_still_writing(tmp_path):
    """Optuna writes user attributes one at a time; a second worker opening the new study between
    two writes used to refuse it as "created under ... base width None"."""
    import threading

    from hptransfer.tuning.study import study_attrs

    url = _sqlite(tmp_path)
    first = open_study("s", CFG, storage=url, space=LR_SPACE)  # a complete study to copy from
    attrs = study_attrs(CFG, LR_SPACE)
    half = optuna.create_study(study_name="half", storage=url)
    items = list(attrs.items())
    for key, value in items[:2]:  # version and rule written, base width not yet
        half.set_user_attr(key, value)

    def finish() -> None:
        for key, value in items[2:]:
            half.set_user_attr(key, value)

    timer = threading.Timer(0.3, finish)
    timer.start()
    try:
        study = open_study("half", CFG, storage=url, space=LR_SPACE)
    finally:
        timer.join()
    assert study_info(study)["base_width"] == study_info(first)["base_width"] == CFG.base_width


_WORKER = """
import sys, time
from hptransfer.scaling import ProxyConfig
from hptransfer.tuning import open_study
url, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
open_study("race", ProxyConfig(name="t", base_width=128, head_dim=32), storage=url)
"""


def test_workers_started_together_on_a_new_sqlite_file_all_open_the_study(tmp_path):
    """Workers racing to create a new database's tables (``table ... already exists``,
    ``UNIQUE constraint failed: alembic_version``) and the study's attributes all succeed."""
    import time

    for round_ in range(2):
        url = _sqlite(tmp_path, f"race{round_}.db")
        start = time.time() + 2.0  # every worker has imported optuna by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, url, str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-1500:]


def test_reopen_for_another_model_is_refused(tmp_path):
    url = _sqlite(tmp_path)
    mlp, mine = {"model": "mlp", "task": "regression"}, {"model": "mine:make", "task": "regression"}
    open_study("m", CFG, storage=url, space=LR_SPACE, extra_attrs=mlp)
    with pytest.raises(StudyMismatchError, match=r"holds trials of model 'mlp'.*asked for model 'mine:make'"):
        open_study("m", CFG, storage=url, space=LR_SPACE, extra_attrs=mine)
    study = open_study("m", CFG, storage=url, space=LR_SPACE, extra_attrs=mine, force=True)
    assert study_info(study)["model"] == "mlp"  # force adds trials; the study's record stays
    open_study("m", CFG, storage=url, space=LR_SPACE)  # no model given: nothing to compare
