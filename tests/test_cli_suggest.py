"""`hptransfer suggest`: table, JSON, config files, and bad input (exit 2, one line)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hptransfer import __version__, default_config, load_config, suggest
from hptransfer.cli.main import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_table_shows_each_class_and_both_wd_rules() -> None:
    code, out, _ = run("suggest", "--width", "4096")
    assert code == 0
    for word in ("vector", "hidden", "output", "linear", "sqrt", "2560", "10240", "2.44e-4"):
        assert word in out
    assert "AdamW weight_decay" in out  # the wd convention is printed with the numbers


def test_json_matches_the_python_api() -> None:
    code, out, _ = run("suggest", "--width", "1024", "--json")
    assert code == 0
    data = json.loads(out)
    plan = suggest(default_config(), 1024)
    assert data["width"] == 1024 and data["rule"] == "mup-wd-linear"
    assert data["groups"]["hidden"]["lr"] == pytest.approx(plan["hidden"].lr)
    assert data["groups"]["hidden"]["weight_decay"] == pytest.approx(plan["hidden"].weight_decay)
    assert data["groups"]["vector"]["tau"] is None  # no decay: infinite timescale
    (alt,) = data["alternatives"]
    assert alt["rule"] == "mup-wd-sqrt" and alt["groups"]["hidden"]["weight_decay"] == pytest.approx(0.2)


def test_one_rule_asked_for_shows_one_rule() -> None:
    code, out, _ = run("suggest", "-w", "512", "--rule", "sqrt", "--json")
    data = json.loads(out)
    assert code == 0 and data["rule"] == "mup-wd-sqrt" and "alternatives" not in data
    code, out, _ = run("suggest", "-w", "512", "--wd-exponent", "0.75", "--json")
    assert json.loads(out)["wd_exponent"] == 0.75


def test_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[proxy]\nname = "mine"\nbase_width = 128\n[hyper]\nlr = 0.01\n[rule]\nname = "sp"\n')
    code, out, _ = run("suggest", "--width", "512", "--config", str(cfg), "--json")
    data = json.loads(out)
    assert code == 0 and data["base_width"] == 128 and data["groups"]["hidden"]["lr"] == 0.01
    assert data["n_heads"] is None  # no attention in this config


def test_table_shows_own_init_scales_and_the_vector_lr_multiplier(tmp_path: Path) -> None:
    cfg = tmp_path / "own.toml"
    cfg.write_text(
        "[proxy]\nbase_width = 64\nhead_dim = 16\n"
        "[hyper]\nlr = 0.01\nvector_lr_mult = 2.0\ninit_scale = 0.5\nembed_init_std = 0.04\n"
        'embed_init_scale = 0.5\n[rule]\noptimizer = "sgd"\n'
    )
    code, out, err = run("suggest", "--width", "512", "--config", str(cfg))
    assert code == 0, err
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["vector"], ["hidden"])
    }
    plan = suggest(load_config(cfg), 512)
    assert float(rows["vector"][1]) == pytest.approx(plan["vector"].lr, rel=1e-2)  # includes × 2
    assert rows["vector"][2] == "0.02"  # explicit embedding std × its scale
    assert rows["hidden"][2] == "own×0.5"  # the model's own init, times the tuned scale
    assert "init own: the model's own init is kept" in " ".join(out.split())
    assert "torch.optim.SGD weight_decay" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "-3"], "width must be a positive integer"),
        (["--width", "12.5"], "width must be a positive integer"),
        (["--width", "1000"], "not divisible by head_dim=64"),
        (["--width", "32"], "smaller than the model allows"),
        (["--width", "512", "--rule", "bogus"], "unknown rule 'bogus'"),
        (["--width", "512", "--config", "/nonexistent.toml"], "config file not found"),
        (["--width", "512", "--readout", "both"], "--readout must be one of lr, multiplier"),
        (["--width", "512", "--depth", "0"], "depth must be a positive integer"),
        (["--width", "512", "--depth", "-4"], "depth must be a positive integer"),
        (["--width", "512", "--depth", "2.5"], "depth must be a positive integer"),
        (["--width", "512", "--depth", "deep"], "depth must be a positive integer"),
        (["--width", "512", "--depth-rule", "bogus"], "--depth-rule must be one of none, depth-mup"),
        (["--width", "512", "--optimizer", "lion"], "--optimizer must be one of adamw"),
        (["--width", "512", "--wd-exponents", "mlp=1,ffn=1"], "--wd-exponents: unknown class 'ffn'"),
        (["--width", "512", "--wd-exponents", "mlp"], "--wd-exponents: 'mlp' is not class=number"),
        (["--width", "512", "--tokens", "0"], "--tokens must be a positive number of tokens"),
        (["--width", "512", "--tokens", "-2e9"], "--tokens must be a positive number of tokens"),
        (["--width", "512", "--tokens", "lots"], "--tokens must be a positive number of tokens"),
        (["--width", "512", "--batch", "0"], "--batch must be a positive number of tokens"),
        (["--width", "512", "--batch", "1e12"], "less than one optimizer step"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    code, out, err = run("suggest", *args)
    assert code == 2
    assert message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "rule"),
    [("CompleteP", "completep"), ("complete-p", "completep"), ("depthmup", "depth-mup"), ("sp", "none")],
)
def test_depth_rule_aliases_are_taken(name: str, rule: str) -> None:
    # the flag check takes what the config layer takes (aliases, any case)
    code, out, err = run("suggest", "--width", "512", "--depth-rule", name, "--json")
    assert code == 0, err
    assert json.loads(out)["depth_rule"] == rule


def test_depth_or_tokens_without_the_proxy_values_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[proxy]\nbase_width = 128\n")
    code, out, err = run("suggest", "--width", "512", "--config", str(cfg), "--depth", "24")
    assert code == 2 and "no proxy.base_depth" in err and len(err.strip().splitlines()) == 1
    code, out, err = run("suggest", "--width", "512", "--config", str(cfg), "--tokens", "2e9")
    assert code == 2 and "no [train] tokens and batch_tokens" in err and "Traceback" not in out + err


def test_width_depth_optimizer_tokens_and_batch_together() -> None:
    """The README's worked example: the JSON is the Python API's plan, the table shows the depth
    multiplier, the residual multiplier and the timescale as a fraction of the run."""
    args = ["--width", "4096", "--depth", "48", "--optimizer", "muon", "--tokens", "2e9", "--batch", "1M"]
    code, out, err = run("suggest", *args, "--json")
    assert code == 0, err
    data = json.loads(out)
    plan = suggest(default_config(), 4096, depth=48, tokens=2e9, batch_tokens=1e6, optimizer="muon")
    assert data["depth"] == 48 and data["depth_mult"] == 24 and data["depth_rule"] == "completep"
    assert data["residual_multiplier"] == pytest.approx(1 / 24) == pytest.approx(plan.residual_multiplier)
    assert data["optimizer"] == "muon" and data["muon_adjust_lr_fn"] == "original"
    assert data["iterations"] == 2000 and data["base_iterations"] == 1000
    for cls in ("vector", "hidden", "output"):
        for key in ("lr", "weight_decay", "eps", "tau"):
            assert data["groups"][cls][key] == pytest.approx(plan[cls].to_dict()[key]), (cls, key)
    assert data["groups"]["hidden"]["tau_fraction"] == pytest.approx(plan.tau_fraction("hidden"))
    assert data["variants"]["vector.block"]["lr"] == pytest.approx(plan.group_for("vector", "block").lr)
    code, out, err = run("suggest", *args)
    text = " ".join(out.split())
    assert code == 0, err
    for words in ("depth 2 → 48", "m_L = 24", "completep", "× 0.0417", "optimizer muon", "2000 steps"):
        assert words in text, words
    assert "tau (/run)" in out and "(2.6)" in out  # hidden tau 5120 steps = 2.56 runs of 2000
    assert "adjust_lr_fn='original'" in text


def test_wd_exponents_per_class_from_the_command_line() -> None:
    code, out, err = run("suggest", "-w", "4096", "--wd-exponents", "attention=0.5, mlp=1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["variants"]["hidden.attention"]["weight_decay"] == pytest.approx(0.1 * 4)
    assert data["variants"]["hidden.mlp"]["weight_decay"] == pytest.approx(0.1 * 16)
    assert data["config"]["rule"]["wd_exponents"] == {"attention": 0.5, "mlp": 1.0}
    code, out, _ = run("suggest", "-w", "4096", "--wd-exponents", "attention=0.5")
    assert code == 0 and "  attention " in out and "  mlp " not in out  # a row only where it differs
    for bad, message in (("attention", "is not class=number"), ("qkv=1", "unknown class 'qkv'")):
        code, _, err = run("suggest", "-w", "4096", "--wd-exponents", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_scale_eps_shows_an_eps_column() -> None:
    code, out, _ = run("suggest", "--width", "4096", "--scale-eps", "--json")
    data = json.loads(out)
    assert code == 0 and data["scale_eps"] is True
    assert data["groups"]["hidden"]["eps"] == pytest.approx(1e-8 / 16)
    code, out, _ = run("suggest", "--width", "4096", "--scale-eps")
    assert code == 0 and "eps" in out.split("─")[0] and "6.25e-10" in out


def test_error_text_is_printed_as_written(tmp_path: Path) -> None:
    """Brackets in a message are text, not rich markup (`[proxy]` used to vanish)."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[bogus]\nx = 1\n")
    code, _, err = run("suggest", "--width", "512", "--config", str(cfg))
    assert code == 2 and "unknown section [bogus]; expected one of [proxy], [hyper], [rule], [train]" in err


def test_version_and_help() -> None:
    assert __version__ in run("--version")[1]
    code, out, _ = run("suggest", "--help")
    assert code == 0 and "Example" in out
    for option in ("--width", "--depth", "--optimizer", "--tokens", "--batch"):
        assert option in out, option


def test_suggest_imports_neither_torch_nor_typer() -> None:
    code = (
        "import sys\nfrom hptransfer.cli.entry import main\n"
        "sys.argv = ['hptransfer', 'suggest', '-w', '4096']\n"
        "main()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'typer' not in sys.modules, 'typer imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "hidden" in proc.stdout


def test_suggest_json_imports_no_rich() -> None:
    """Scripts call `suggest --json`: it prints JSON without loading rich (or torch, or typer)."""
    code = (
        "import json, sys\nfrom hptransfer.cli.entry import main\n"
        "sys.argv = ['hptransfer', 'suggest', '-w', '4096', '--json']\n"
        "main()\n"
        "loaded = [m for m in ('rich', 'torch', 'typer') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["groups"]["hidden"]["lr"] > 0


def test_fast_path_reads_the_same_options_as_the_typer_command() -> None:
    import typer.main

    from hptransfer.cli.suggest import _OPTIONS

    command = typer.main.get_command(app).commands["suggest"]  # type: ignore[attr-defined]
    typer_opts = {opt: p.name for p in command.params for opt in p.opts}
    assert typer_opts == {opt: name for opt, (name, _) in _OPTIONS.items()}


def _through_entry(args: list[str]) -> tuple[int, str, str]:
    """``hptransfer ARGS`` as the console script runs it (fast path where it applies)."""
    from hptransfer.cli.entry import main

    with runner.isolation() as (out, err, _):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        sys.stdout.flush()
        sys.stderr.flush()
        return code, out.getvalue().decode(), err.getvalue().decode()


# Each line runs once through the console script and once through the typer app alone: stdout,
# stderr and exit code must be the same. `fast`: the console script answers it without typer.
@pytest.mark.parametrize(
    ("args", "fast"),
    [
        (["--width", "4096"], True),
        (["-w", "512", "--rule=sqrt", "--json"], True),
        (["--width=1024", "--wd-exponent", "-0.5", "--readout", "multiplier"], True),
        (["--width", "-3"], True),
        (["--width", "1000"], True),
        (["--width", "512", "--readout", "both"], True),
        (["--width", "512", "--config", "/nonexistent.toml"], True),
        (["--width", "512", "--study-name", "x"], True),
        (
            ["--width", "4096", "--depth", "48", "--optimizer", "muon", "--tokens", "2e9", "--batch", "1M"],
            True,
        ),
        (["--width=1024", "--depth=8", "--depth-rule", "depth-mup", "--scale-eps"], True),
        (["--width", "512", "--depth", "0"], True),
        (["--width", "512", "--tokens", "x"], True),
        (["--width", "512", "--scale-eps=1"], False),
        (["--width", "512", "--wd-exponents", "mlp=0.5", "--rule", "sqrt"], True),
        (["--width", "512", "--top-k", "0"], False),  # typer's own range error
        (["--width", "512", "--wd-exponent", "x"], False),
        (["--width", "512", "--json=1"], False),
        (["--width", "512", "--bogus"], False),
        (["--width", "512", "extra"], False),
        (["-w=4096"], False),  # click reads the value "=4096"
        (["--width"], False),
        ([], False),
        (["--help"], False),
    ],
)
def test_fast_path_and_typer_answer_alike(args: list[str], fast: bool) -> None:
    from hptransfer.cli.suggest import parse_suggest_args

    assert (parse_suggest_args(args) is not None) == fast
    code, out, err = _through_entry(["suggest", *args])
    typer_only = runner.invoke(app, ["suggest", *args], prog_name="hptransfer")
    assert (code, out, err) == (typer_only.exit_code, typer_only.stdout, typer_only.stderr)
    assert "Traceback" not in err


def test_study_alternative_rule_carries_the_weight_decay_the_proxy_trained_with(tmp_path: Path) -> None:
    """Issue 12's example: tuned under linear at proxy width 32, base width 64. At 4096 the sqrt
    column must carry the proxy's own wd (0.686 · 32/64) from width 32: 3.88, not 5.49."""
    from hptransfer import ProxyConfig
    from hptransfer.tuning import SearchSpace, TransferObjective, open_study
    from hptransfer.tuning.space import Range

    url = f"sqlite:///{tmp_path / 'proxy.db'}"
    cfg = ProxyConfig(name="p", base_width=64, rule="mup-wd-linear")
    space = SearchSpace({"lr": Range(2**-12, 2**-2), "weight_decay": Range(1e-3, 10.0)})
    study = open_study("p", cfg, storage=url, space=space, proxy_width=32)
    study.enqueue_trial({"lr": 2**-8, "weight_decay": 0.686})
    study.optimize(TransferObjective(lambda plan, trial: 1.0, cfg, width=32, space=space), n_trials=1)
    code, out, err = run("suggest", "--width", "4096", "--study", url, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["groups"]["hidden"]["weight_decay"] == pytest.approx(0.686 * 64)  # linear, from base
    (alt,) = data["alternatives"]
    assert alt["rule"] == "mup-wd-sqrt"
    assert alt["groups"]["hidden"]["weight_decay"] == pytest.approx(0.686 * 0.5 * math.sqrt(128))
    assert alt["groups"]["hidden"]["weight_decay"] == pytest.approx(3.88, abs=0.005)
    assert data["proxy_width"] == 32
    code, out, _ = run("suggest", "--width", "4096", "--study", url)
    assert code == 0 and "carried from the proxy width 32" in " ".join(out.split())
    # both columns agree at the proxy width, where the trials actually ran
    code, out, _ = run("suggest", "--width", "32", "--study", url, "--json")
    data = json.loads(out)
    assert data["alternatives"][0]["groups"]["hidden"]["weight_decay"] == pytest.approx(
        data["groups"]["hidden"]["weight_decay"]
    )


def test_study_url_carries_the_best_trial(tmp_path: Path) -> None:
    import optuna

    from hptransfer.tuning import SearchSpace, TransferObjective, best_plan, open_study
    from hptransfer.tuning.space import Range

    url = f"sqlite:///{tmp_path / 'proxy.db'}"
    space = SearchSpace({"lr": Range(2**-12, 2**-2)})
    cfg = default_config()
    study = open_study("proxy", cfg, storage=url, space=space, sampler=optuna.samplers.RandomSampler(seed=0))

    def train(plan, trial):  # type: ignore[no-untyped-def]  # a loss with its optimum at base lr 2^-7
        return (math.log2(plan["hidden"].lr / plan["hidden"].lr_scale) + 7) ** 2

    study.optimize(TransferObjective(train, cfg, space=space), n_trials=8)
    code, out, err = run("suggest", "--width", "2048", "--study", url, "--study-name", "proxy", "--json")
    assert code == 0, err
    data = json.loads(out)
    expected = best_plan(study, 2048)
    assert data["groups"]["hidden"]["lr"] == pytest.approx(expected["hidden"].lr)
    assert data["base_lr"] == pytest.approx(study.best_params["lr"])
    # with one study in the storage the name may be left out; the table names the study
    code, out, _ = run("suggest", "--width", "2048", "--study", url)
    assert code == 0 and "best of study" in out


def test_study_carries_every_tuned_value_to_width(tmp_path: Path) -> None:
    """Whatever the search space tunes (every ProxyConfig field in TUNABLE), `suggest --study`
    carries it: the config it prints holds the trial's values and the plan is that config's."""
    from dataclasses import replace

    from hptransfer.tuning import TUNABLE, SearchSpace, TransferObjective, open_study
    from hptransfer.tuning.space import Range

    url = f"sqlite:///{tmp_path / 'all.db'}"
    cfg = default_config()
    space = SearchSpace({name: Range(1e-3, 10.0) for name in TUNABLE})
    values = {name: 0.013 * (i + 2) for i, name in enumerate(TUNABLE)}
    study = open_study("all", cfg, storage=url, space=space)
    study.enqueue_trial(values)
    study.optimize(TransferObjective(lambda plan, trial: 1.0, cfg, space=space), n_trials=1)
    code, out, err = run("suggest", "--width", "2048", "--study", url, "--json")
    assert code == 0, err
    data = json.loads(out)
    for name, value in values.items():
        assert data["config"]["hyper"][name] == pytest.approx(value), name
    expected = suggest(replace(cfg, **values), 2048).to_dict()
    for cls, group in expected["groups"].items():  # equal up to the storage's float round trip
        for key, value in group.items():
            got = data["groups"][cls][key]
            assert got == (pytest.approx(value) if isinstance(value, float) else value), (cls, key)
    assert data["attention_scale"] == pytest.approx(expected["attention_scale"])
    assert data["groups"] != suggest(cfg, 2048).to_dict()["groups"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "sqlite:///{tmp}/missing.db"], "no such file"),
        (["--study", "sqlite:///{tmp}/x.db", "--config", "c.toml"], "not both"),
        (["--study-name", "x"], "--study-name needs --study"),
        (["--study", "nosuchscheme://x"], "nosuchscheme"),
    ],
)
def test_study_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run("suggest", "--width", "512", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "missing.db").exists()  # reading never creates a storage


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["tune", "--ladder", "32,x"], "--ladder"),
        (["sweep", "--widths", "64,y"], "--widths"),
        (["sweep", "--seeds", "0,z"], "--seeds"),
        (["diagnose", "--widths", "64,abc"], "--widths"),
    ],
)
def test_integer_lists_are_parsed_alike_by_every_command(args: list[str], option: str) -> None:
    code, out, err = run(*args)
    assert code == 2 and f"{option}: " in err and "is not an integer" in err
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1
