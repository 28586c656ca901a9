import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hptransfer.cli.main import app
from hptransfer.cli.stn import parse_hyper
from hptransfer.scaling import load_config
from hptransfer.stn.tasks import make_task, train_fixed

torch.set_num_threads(1)  # the machine's 2 cores are shared

runner = CliRunner()


def test_cli_runs_writes_config_suggest_reads_and_refuses_changed_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = [
        "stn",
        "--task",
        "classify",
        "--hyper",
        "dropout=0.2:0,0.9",
        "--hyper",
        "weight_decay=0.1:1e-3,10",
        "--out",
        str(out),
        "--checkpoint-every",
        "5",
    ]
    args = [*common, "--epochs", "2"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert set(payload["values"]) == {"dropout", "weight_decay"}
    for name in ("stn_trajectory.png", "stn_trajectory.svg", "hyper.json", "proxy.toml", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    cfg = load_config(out / "proxy.toml")
    # the tuned AdamW weight_decay is what suggest carries
    assert cfg.weight_decay == pytest.approx(payload["values"]["weight_decay"], rel=1e-6)
    assert cfg.base_width == make_task("classify").width
    saved = json.loads((out / "hyper.json").read_text())
    assert len(saved["trajectory"]["value/dropout"]) == len(saved["trajectory"]["step"]) > 16
    sug = runner.invoke(app, ["suggest", "--config", str(out / "proxy.toml"), "--width", "1024", "--json"])
    assert sug.exit_code == 0, sug.output
    # same output folder again: refused without --resume; --resume with other settings says what changed
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    more = runner.invoke(app, [*common, "--epochs", "3", "--resume"])
    assert more.exit_code == 2 and "training steps 16 -> 24" in more.output, more.output
    other = runner.invoke(app, [*args, "--hyper-lr", "0.1", "--resume"])
    assert other.exit_code == 2 and "hyper_lr 0.03 -> 0.1" in other.output, other.output
    same = runner.invoke(app, [*args, "--resume", "--json"])
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["values"] == payload["values"]


def test_help_shows_the_python_defaults() -> None:
    from hptransfer.stn import StnConfig

    res = runner.invoke(app, ["stn", "--help"])
    text = " ".join(res.output.replace("│", " ").split())
    d = StnConfig()
    for option, value in (
        ("--hyper-lr", d.hyper_lr),
        ("--tau", d.tau),
        ("--t-train", d.t_train),
        ("--t-val", d.t_val),
        ("--trust", d.trust),
        ("--anneal", d.anneal),
        ("--checkpoint-every", d.checkpoint_every),
    ):
        assert f"Default: {value:g}." in text.split(option, 1)[1][:200], option
    assert f"Default: {d.warmup_frac:g} of them" in text
    assert d.delta and "Default: on." in text


def test_same_seed_gives_bit_identical_runs(tmp_path: Path) -> None:
    outs = []
    for run in ("a", "b"):
        res = runner.invoke(
            app, ["stn", "--epochs", "1", "--seed", "3", "--out", str(tmp_path / run), "--json"]
        )
        assert res.exit_code == 0, res.output
        outs.append(json.loads((tmp_path / run / "hyper.json").read_text()))
    assert outs[0]["values"] == outs[1]["values"] and outs[0]["trajectory"] == outs[1]["trajectory"]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


MODELS = """
import os, signal
from torch import nn

SENT = []


def make(width):
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Dropout(0.1), nn.Linear(width, 10))


class Interrupting(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.net = make(width)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 12 and not SENT:  # Ctrl-C once, in the middle of the run
            SENT.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return self.net(x)


def broken(width):
    raise RuntimeError("boom")


def wrong_shape(width):
    return nn.Linear(7, 10)
"""


def test_own_model_from_module_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stn_user_models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(
        app,
        [
            "stn",
            "--model",
            "stn_user_models:make",
            "--width",
            "48",
            "--hyper",
            "dropout.2=0.1:0,0.9",
            "--hyper",
            "weight_decay.hidden=0.1:1e-3,10",
            "--epochs",
            "1",
            "--out",
            "own",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["values"]) == {"dropout.2", "weight_decay.hidden"}
    cfg = load_config(tmp_path / "own" / "proxy.toml")
    assert cfg.base_width == 48 and cfg.weight_decay > 0
    for spec, needle in (("stn_user_models:broken", "boom"), ("stn_user_models:wrong_shape", "inputs")):
        bad = runner.invoke(
            app, ["stn", "--model", spec, "--hyper", "l2=1e-3:1e-6,1", "--epochs", "1", "--out", "bad"]
        )
        assert bad.exit_code == 2 and needle in bad.output and "Traceback" not in bad.output, bad.output
        assert not (tmp_path / "bad").exists()


def test_ctrl_c_saves_and_prints_the_resume_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stn_user_models2.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    args = ["stn", "--model", "stn_user_models2:Interrupting", "--epochs", "3", "--out", "cc"]
    res = runner.invoke(app, args)
    assert res.exit_code == 130, res.output
    assert "interrupted at step" in res.output and "saved cc/checkpoint.pt" in res.output
    command = res.output.split("Resume with:", 1)[1].split()
    assert command[:2] == ["hptransfer", "stn"] and "--resume" in command
    resumed = runner.invoke(app, [*command[1:], "--json"])
    assert resumed.exit_code == 0, resumed.output
    clean = runner.invoke(app, [*args[:-1], "clean", "--json"])
    assert json.loads(resumed.stdout)["values"] == json.loads(clean.stdout)["values"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--hyper", "dropout=0.1:0.9,0"], "reversed"),
        (["--hyper", "dropout=0.1"], "NAME=INIT:LOW,HIGH"),
        (["--hyper", "weight_decay=0.1:0,1"], "low > 0"),
        (["--hyper", "weight_decay=1e-3:1e-6,inf,"], "NAME=INIT:LOW,HIGH"),
        (["--hyper", "l2=1e-3:nan,1"], "finite"),
        (["--hyper", "weight_decay=1e-3:1e-6,inf"], "finite"),
        (["--width", "64"], "--model"),
        (["--model", "nomodule_xyz:f"], "cannot import"),
        (["--hyper", "dropout.9=0.1:0,0.9"], "not used by this model"),
        (["--hyper", "lr=1e-3:1e-5,1@log"], "learning rate"),
        (["--task", "nope"], "unknown task"),
        (["--task", "regression"], "now 'regression-small'"),
        (["--task", "charlm"], "not set up for STN"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, argv: list[str], needle: str) -> None:
    res = runner.invoke(app, ["stn", *argv, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) <= 3 and needle in " ".join(lines) and "Traceback" not in res.output


def test_base_config_that_cannot_take_the_width_is_refused_before_training(tmp_path: Path) -> None:
    cfg = tmp_path / "base.toml"
    cfg.write_text("[proxy]\nbase_width = 96\nhead_dim = 48\n")
    res = runner.invoke(app, ["stn", "--config", str(cfg), "--epochs", "1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "head_dim=48" in res.output and not (tmp_path / "o").exists()


def test_corrupt_checkpoint_exits_cleanly(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    res = runner.invoke(app, ["stn", "--epochs", "1", "--out", str(tmp_path), "--resume"])
    assert res.exit_code == 2 and "corrupt" in res.output


def test_parse_hyper_transform_suffix() -> None:
    assert parse_hyper("input_noise=0.1:1e-3,2@log")["transform"] == "log"
    with pytest.raises(ValueError, match="log or logit"):
        parse_hyper("input_noise=0.1:1e-3,2@exp")


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, hptransfer.cli.stn; print('torch' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_builtin_task_overfits_without_regularisation() -> None:
    torch.manual_seed(0)
    task = make_task("classify", seed=0)
    plain = train_fixed(task, {}, epochs=25)
    reg = train_fixed(task, {"l2": 1e-2, "dropout": 0.5}, epochs=25)
    assert plain["train_loss"] < 0.3 * plain["val_loss"]  # memorises the small training split
    assert reg["val_loss"] < plain["val_loss"] - 0.3


def test_train_fixed_is_the_plain_epoch_loop_with_the_tuners_regularisers() -> None:
    """train_fixed through the one training loop: the same run as an epoch loop written out by
    hand (global generator for init, permutations, noise and dropout; l2 as c/2 ||W||^2; AdamW
    decay on one layer), so STN and fixed-value searches optimise the same objective."""
    task = make_task("regression-small", seed=1, n_train=64)
    values = {"dropout": 0.2, "l2": 1e-2, "input_noise": 0.3, "weight_decay.layers.3": 0.5}
    got = train_fixed(task, values, epochs=2, seed=5)

    torch.manual_seed(5)
    model = task.make_model()
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.2
    hidden = model.layers[3].weight
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p is not hidden], "weight_decay": 0.0},
            {"params": [hidden], "weight_decay": 0.5},
        ],
        lr=task.lr,
    )
    x, y = task.train
    for _ in range(2):
        order = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], task.batch_size):
            idx = order[i : i + task.batch_size]
            xb = x[idx] + 0.3 * torch.randn_like(x[idx])
            loss = torch.nn.functional.mse_loss(model(xb), y[idx])
            loss = loss + sum(
                0.5 * 1e-2 * (m.weight**2).sum() for m in model.modules() if isinstance(m, torch.nn.Linear)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        want = {
            k: float(torch.nn.functional.mse_loss(model(xs), ys))
            for k, (xs, ys) in (("train_loss", task.train), ("val_loss", task.val), ("test_loss", task.test))
        }
    assert got == pytest.approx(want, rel=1e-4)
    assert train_fixed(task, values, epochs=2, seed=6)["val_loss"] != got["val_loss"]
    with pytest.raises(ValueError, match="names no module"):
        train_fixed(task, {"dropout.head": 0.1}, epochs=1)


def test_make_task_names_the_renamed_regression() -> None:
    with pytest.raises(ValueError, match="now 'regression-small'"):
        make_task("regression")
    small = make_task("regression-small", seed=0)
    assert small.loss == "mse" and small.train[0].shape == (128, 16) and small.test[0].shape[0] == 4096
    assert [h.name for h in small.default_hypers] == ["dropout", "l2", "input_noise"]
    assert make_task("classify", width=64).make_model().width == 64


def test_benchmark_quick_smoke_and_render(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stn_vs_optuna.py"
    spec = importlib.util.spec_from_file_location("stn_vs_optuna", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.run(module.parse_args(["--quick", "--skip", "transfer"]))
    from _results import result_document

    doc = module.render(result_document("stn_vs_optuna", results), tmp_path)
    assert (
        "## Robust from any start" in doc and "| STN |" in doc and (tmp_path / "stn_trajectory.png").exists()
    )
    line = module.headline_line(results)
    assert line.startswith("HEADLINE: ridge ") and "TPE-3" in line
    assert len(module.headline(result_document("stn_vs_optuna", results))) == 3


def test_ctrl_c_while_results_are_written_is_one_line_and_resume_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a Ctrl-C after training, while the outputs are written, was a silent exit 130 (typer's
    # own); it is reported like one during training, and resuming the finished run writes them
    import hptransfer.stn.report as report

    out = tmp_path / "run"
    args = ["stn", "--task", "classify", "--epochs", "1", "--out", str(out), "--checkpoint-every", "5"]
    real = report.write_outputs

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_outputs", interrupted)  # the command imports it when run
    res = runner.invoke(app, args)
    assert res.exit_code == 130 and "Resume with: hptransfer stn" in res.output, res.output
    assert "the last checkpoint is" in res.output and not (out / "hyper.json").exists()
    monkeypatch.setattr(report, "write_outputs", real)
    again = runner.invoke(app, [*args, "--resume", "--json"])
    assert again.exit_code == 0, again.output
    assert (out / "hyper.json").exists() and (out / "proxy.toml").exists()
