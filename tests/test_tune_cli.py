"""`hptransfer tune` on the built-in MLP (tiny: a few trials of a few steps), its figures, the study
it leaves behind, and its bad-input messages."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace

import optuna
import pytest
from typer.testing import CliRunner

from hptransfer.cli.main import app
from hptransfer.models import builtin_config
from hptransfer.scaling import suggest
from hptransfer.tuning import config_from_study, default_space, load_study, study_info, study_space

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    url = f"sqlite:///{tmp / 'h.db'}"
    code, out, err = run(
        "tune",
        "--model",
        "mlp",
        "--width",
        "32",
        "--trials",
        "4",
        "--steps",
        "15",
        "--storage",
        url,
        "--study",
        "mlp-proxy",
        "--out",
        str(tmp / "figs"),
        "--target-width",
        "512",
        "--sampler-seed",
        "0",
        "--json",
    )
    assert code == 0, err
    return url, json.loads(out), tmp


def test_tune_runs_trials_and_prints_transferred_plan(tuned):
    url, out, tmp = tuned
    assert out["study"] == "mlp-proxy" and out["trials"] == {"COMPLETE": 4}
    assert out["proxy_width"] == 32 and out["plan"]["width"] == 512
    study = load_study(url, "mlp-proxy")
    assert len(study.trials) == 4 and study.best_value == pytest.approx(out["best_value"])
    info = study_info(study)
    assert info["model"] == "mlp" and info["task"] == "regression" and info["proxy_width"] == 32
    assert info["base_width"] == builtin_config("mlp").base_width
    assert "attn_mult" not in study.best_params  # the MLP has no attention to tune
    # the JSON plan is the study's best trial carried to 512, as `suggest --study` computes it
    cfg = config_from_study(url, "mlp-proxy")
    assert suggest(cfg, 512).to_dict() == out["plan"]
    assert cfg.lr == pytest.approx(study.best_params["lr"])
    for stem in ("optuna_history", "optuna_slice"):
        for ext in ("png", "svg"):
            assert (tmp / "figs" / f"{stem}.{ext}").stat().st_size > 1000


def test_tune_refuses_other_rule_unless_forced(tuned, tmp_path):
    url, _, _ = tuned
    cfg = tmp_path / "sqrt.toml"
    cfg.write_text(replace(builtin_config("mlp"), rule="mup-wd-sqrt").to_toml())
    args = [
        "tune",
        "--model",
        "mlp",
        "--width",
        "32",
        "--trials",
        "1",
        "--steps",
        "5",
        "--storage",
        url,
        "--study",
        "mlp-proxy",
        "--config",
        str(cfg),
    ]
    code, _, err = run(*args)
    assert code == 2
    assert "created under rule mup-wd-linear" in err and "mup-wd-sqrt" in err and "--force" in err
    code, _out, err = run(*args, "--force")
    assert code == 0, err
    assert len(optuna.load_study(study_name="mlp-proxy", storage=url).trials) == 5


def test_tune_width_ladder(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    code, _out, err = run(
        "tune",
        "--model",
        "mlp",
        "--width",
        "32",
        "--ladder",
        "16",
        "--eta",
        "2",
        "--trials",
        "5",
        "--steps",
        "10",
        "--storage",
        url,
        "--sampler-seed",
        "1",
        "--json",
    )
    assert code == 0, err
    study = load_study(url, None)
    assert study_info(study)["ladder"] == [16, 32]
    for t in study.trials:
        if t.state.name == "COMPLETE":
            assert set(t.intermediate_values) == {1, 2}  # both rungs: widths 16 then 32
        else:
            assert t.state.name == "PRUNED" and set(t.intermediate_values) == {1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "foo://me:hunter2@db/x"], r"unknown storage scheme 'foo' in foo://me:\*\*\*@db/x"),
        pytest.param(
            ["--storage", "postgresql+psycopg://me:hunter2@127.0.0.1:1/x"],
            r"cannot open storage postgresql\+psycopg://me:\*\*\*@127\.0\.0\.1:1/x",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("psycopg") is None,
                reason="needs the PostgreSQL driver: pip install 'hptransfer[postgres]'",
            ),
        ),
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--model", "no_such_module:make"], "cannot import module 'no_such_module'"),
        (["--model", "llama", "--width", "40"], "not divisible by head_dim=16"),
        (["--trials", "0"], "--trials must be a positive integer"),
        (["--out", "/dev/null/figs"], "--out /dev/null/figs: /dev/null is a file"),
    ],
)
def test_tune_bad_input_is_one_clear_line(args, message, tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    code, out, err = run("tune", "--model", "mlp", "--steps", "2", "--trials", "1", *args)
    assert code == 2
    assert re.search(message, " ".join(err.split())), err
    assert "hunter2" not in err + out and "Traceback" not in err


def test_tune_searches_the_space_given_and_records_it(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = tmp_path / "space.toml"
    space.write_text("[lr]\nlow = 0.001\nhigh = 0.01\n[output_mult]\nlow = 0.5\nhigh = 2.0\nlog = false\n")
    common = ["tune", "--model", "mlp", "--width", "32", "--trials", "2", "--steps", "5", "--storage", url]
    code, out, err = run(*common, "--study", "file", "--space", str(space), "--sampler-seed", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    wanted = {
        "lr": {"low": 0.001, "high": 0.01, "log": True},
        "output_mult": {"low": 0.5, "high": 2.0, "log": False},
    }
    assert data["search_space"] == wanted
    study = load_study(url, "file")
    assert study_space(study).to_dict() == wanted  # recorded with the study
    for t in study.trials:
        assert set(t.params) == {"lr", "output_mult"}
        assert 0.001 <= t.params["lr"] <= 0.01 and 0.5 <= t.params["output_mult"] <= 2.0
    # --no-tune (repeatable or comma-separated) leaves names out of the default space
    no_tune = ["--no-tune", "weight_decay,init_scale", "--no-tune", "lr"]
    code, out, err = run(*common, "--study", "fixed", *no_tune)
    assert code == 0, err
    assert "searched: " in out and "weight_decay" not in out.split("searched: ")[1].splitlines()[0]
    study = load_study(url, "fixed")
    names = set(study_space(study).to_dict())
    assert names and not names & {"lr", "weight_decay", "init_scale", "init_std"}
    for t in study.trials:
        assert set(t.params) == names
    assert config_from_study(url, "fixed").lr == builtin_config("mlp").lr  # kept at the config's value


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["--space", "{tmp}/missing.toml"], "search space file not found"),
        ("[lr]\nlow = 1\n", ["--space", "{tmp}/s.toml"], "malformed search space"),
        ("[bogus]\nlow = 1\nhigh = 2\n", ["--space", "{tmp}/s.toml"], "cannot tune 'bogus'"),
        ("lr = 3\n", ["--space", "{tmp}/s.toml"], "maps each base hyperparameter to"),
        ("[lr\n", ["--space", "{tmp}/s.toml"], "not valid TOML"),
        (None, ["--no-tune", "attn_mult"], "--no-tune attn_mult: not in the search space"),
        (None, ["--no-tune", ",".join(n for n in default_space().ranges if n != "attn_mult")], "nothing"),
    ],
)
def test_tune_space_bad_input(content, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "s.toml").write_text(content)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run("tune", "--model", "mlp", "--steps", "2", "--trials", "1", *args)
    assert code == 2 and message in " ".join(err.split()), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "hptransfer.db").exists()  # refused before a study is made


def test_tune_help_shows_the_search_space():
    code, out, _ = run("tune", "--help")
    text = " ".join(out.split())
    assert code == 0 and "--space" in text and "--no-tune" in text
    for name in default_space().ranges:
        assert name in text


def test_cli_import_does_not_load_torch():
    code = (
        "import sys; import hptransfer.cli.main as m; "
        "assert 'tune' in [c.name for c in m.app.registered_commands]; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


_FACTORY = """
import torch
from hptransfer.models import MLP

def make(width):
    if torch.empty(1).device.type != "meta":  # building the real model, inside a trial
        raise {error}
    return MLP(width)
"""


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        ("KeyboardInterrupt", 130, "error: interrupted: 0 finished trials kept in study"),
        ("RuntimeError('out of memory')", 2, "trial 0 failed: RuntimeError: out of memory"),
    ],
)
def test_tune_failures_and_ctrl_c_are_one_line_each(error, code, expected, tmp_path, monkeypatch):
    mod = f"tune_factory_{code}"
    (tmp_path / f"{mod}.py").write_text(_FACTORY.format(error=error))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    args = ["tune", "--model", f"{mod}:make", "--task", "regression", "--width", "32", "--steps", "2"]
    result = runner.invoke(app, [*args, "--trials", "2"])
    text = result.stdout + result.stderr
    assert result.exit_code == code, text
    assert expected in text and "Traceback" not in text and "[W " not in text  # no Optuna warnings
    if code == 130:  # one line, with the command that resumes
        assert len(result.stderr.strip().splitlines()) == 1 and "to go on: hptransfer tune" in result.stderr
    sys.modules.pop(mod, None)


_TIED = """
import torch
from torch import nn


class Tied(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.emb = nn.Embedding(128, width)
        self.mid = nn.Linear(width, width)
        self.head = nn.Linear(width, 128, bias=False)
        self.head.weight = self.emb.weight  # one parameter, two roles

    def forward(self, idx):
        return self.head(torch.relu(self.mid(self.emb(idx))))


def make(width):
    return Tied(width)


def broken(width):
    raise RuntimeError("no")
"""


def test_tied_readout_note_only_for_a_model_that_ties(tmp_path, monkeypatch):
    from hptransfer.cli.tune import tied_readout

    (tmp_path / "tune_tied.py").write_text(_TIED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = builtin_config("mlp")
    assert tied_readout("mlp", None, cfg, 32) is False
    assert tied_readout("llama", None, builtin_config("llama"), 32) is False
    assert tied_readout("tune_tied:make", "charlm", cfg, 32) is True
    assert tied_readout("tune_tied:broken", "charlm", cfg, 32) is None  # unknown: the note stays
    code, out, err = run("tune", "--model", "mlp", "--width", "32", "--trials", "1", "--steps", "2")
    assert code == 0, err
    assert "rule mup" in out and "tied embedding/readout" not in out
    sys.modules.pop("tune_tied", None)
