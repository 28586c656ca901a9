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


def test_cli_runs_writes_config_suggest_reads_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = [
        "stn",
        "--task",
        "classify",
        "--hyper",
        "dropout=0.2:0,0.9",
        "--hyper",
        "weight_decay=1e-3:1e-6,1",
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
    assert cfg.weight_decay == pytest.approx(payload["values"]["weight_decay"], rel=1e-6)
    assert cfg.base_width == make_task("classify").width
    saved = json.loads((out / "hyper.json").read_text())
    assert len(saved["trajectory"]["value/dropout"]) == len(saved["trajectory"]["step"]) > 16
    sug = runner.invoke(app, ["suggest", "--config", str(out / "proxy.toml"), "--width", "1024", "--json"])
    assert sug.exit_code == 0, sug.output
    # same output folder again: refused without --resume; with --resume and more epochs it continues
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    more = runner.invoke(app, [*common, "--epochs", "3", "--resume", "--json"])
    assert more.exit_code == 0, more.output
    assert len(json.loads((out / "hyper.json").read_text())["trajectory"]["step"]) > len(
        saved["trajectory"]["step"]
    )


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--hyper", "dropout=0.1:0.9,0"], "reversed"),
        (["--hyper", "dropout=0.1"], "NAME=INIT:LOW,HIGH"),
        (["--hyper", "weight_decay=0.1:0,1"], "low > 0"),
        (["--hyper", "dropout.9=0.1:0,0.9"], "not used by this model"),
        (["--hyper", "lr=1e-3:1e-5,1@log"], "learning rate"),
        (["--task", "nope"], "unknown task"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, argv: list[str], needle: str) -> None:
    res = runner.invoke(app, ["stn", *argv, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) <= 3 and needle in " ".join(lines) and "Traceback" not in res.output


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
    reg = train_fixed(task, {"weight_decay": 1e-2, "dropout": 0.5}, epochs=25)
    assert plain["train_loss"] < 0.3 * plain["val_loss"]  # memorises the small training split
    assert reg["val_loss"] < plain["val_loss"] - 0.3


def test_benchmark_quick_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stn_vs_optuna.py"
    spec = importlib.util.spec_from_file_location("stn_vs_optuna", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("HEADLINE:") and "TPE-3" in lines[-1]
    assert any(line.startswith("STN ") for line in lines)
