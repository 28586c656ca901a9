"""`hptransfer diagnose` and its Python API: exit codes 0/1/2, checkpoints, tiny end-to-end runs."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hptransfer.cli.main import app
from hptransfer.diagnostics import diagnose, diagnose_checkpoints
from hptransfer.diagnostics.report import DiagnosticError

runner = CliRunner()
WIDTHS = [32, 64, 128]


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["diagnose", *args])
    return result.exit_code, result.stdout, result.stderr


def _matrix(out: int, inp: int, sigma: float, seed: int, trained: bool = True) -> torch.Tensor:
    """A matrix with top singular value sigma (orthonormal factors by QR): a trained-looking
    outlier over a bulk at 0.3..0.15·sigma, or (``trained=False``) a flat sigma·linspace(1, 0.5)
    like a random init."""
    g = torch.Generator().manual_seed(seed)
    r = min(out, inp)
    u, _ = torch.linalg.qr(torch.randn(out, r, generator=g))
    v, _ = torch.linalg.qr(torch.randn(inp, r, generator=g))
    values = torch.linspace(1.0, 0.5, r) if not trained else torch.linspace(0.3, 0.15, r)
    values[0] = 1.0
    return (u * (sigma * values)) @ v.T


def _save_proxies(folder: Path, hidden_alpha: float, trained: bool = True) -> list[str]:
    """State dicts of a 2-layer 'model' whose hidden sigma_max scales as width^hidden_alpha."""
    paths = []
    for i, w in enumerate(WIDTHS):
        sd = {
            "embed.weight": _matrix(100, w, 2.0, i),
            "fc.weight": _matrix(4 * w, w, 3.0 * (w / 32) ** hidden_alpha, 10 + i, trained),
            "fc.bias": torch.zeros(4 * w),
            "proj.weight": _matrix(w, 4 * w, 2.0 * (w / 32) ** hidden_alpha, 20 + i, trained),
            "head.weight": _matrix(100, w, 1.0, 30 + i),
        }
        path = folder / f"w{w}.pt"
        torch.save(sd, path)
        paths.append(str(path))
    return paths


def test_checkpoints_invariant_exit_0(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, 0.0)
    code, out, err = run("--checkpoints", ",".join(paths), "--rule", "mup-wd-linear")
    assert code == 0, err
    assert "safe" in out and "fc.weight" in out and "calibrated" in out


def test_checkpoints_drift_exit_1_and_json(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, -0.25)
    code, out, err = run("--checkpoints", ",".join(paths), "--rule", "linear", "--json")
    assert code == 1, err
    data = json.loads(out)
    assert data["safe"] is False and data["overall"] == "shrinking"
    assert sorted(data["drifting"]) == ["fc.weight", "proj.weight"]
    # muP lr with wd ∝ width gives alpha = -0.25 -> the law's fix is wd ∝ sqrt(width)
    assert data["calibration"]["wd_exponent"] == pytest.approx(0.5, abs=1e-3)
    assert data["calibration"]["nearest_preset"] == "sqrt"
    layers = {row["name"]: row for row in data["layers"]}
    assert layers["embed.weight"]["class"] == "input" and layers["head.weight"]["class"] == "output"


def test_checkpoints_widths_flag_and_out_folder(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, 0.3)
    renamed = []
    for i, p in enumerate(paths):
        new = tmp_path / f"proxy_{'abc'[i]}.pt"
        Path(p).rename(new)
        renamed.append(str(new))
    code, _, err = run(
        "--checkpoints",
        ",".join(renamed),
        "--widths",
        ",".join(map(str, WIDTHS)),
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 1, err
    assert (tmp_path / "out" / "report.json").exists()
    assert (tmp_path / "out" / "spectral_width.png").exists()
    assert (tmp_path / "out" / "spectral_width.svg").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "64"], "at least two"),
        (["--widths", "64,abc"], "'abc' is not an integer"),
        (["--widths", "32,64", "--threads", "0"], "--threads must be >= 1"),
        (["--widths", "32,64", "--model", "nosuchmodel"], "unknown model 'nosuchmodel'"),
        (["--widths", "32,64", "--model", "no_such_module_xyz:f"], "cannot import module"),
        (["--widths", "32,64", "--rule", "bogus"], "unknown rule 'bogus'"),
        (["--widths", "32,50", "--model", "llama"], "width 50 is not divisible"),
        (["--widths", "32,64", "--gate", "weird"], "--gate"),
        (["--checkpoints", "missing_w32.pt,missing_w64.pt"], "checkpoint not found"),
        (["--checkpoints", "a.pt,b.pt", "--widths", "32"], "2 checkpoints but 1 widths"),
    ],
)
def test_bad_input_exit_2_one_line(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) <= 3  # one red line (rich may wrap it)


def test_unnamed_checkpoint_width_is_bad_input(tmp_path: Path) -> None:
    for name in ("first.pt", "second.pt"):
        torch.save({"fc.weight": torch.randn(8, 8)}, tmp_path / name)
    code, _, err = run("--checkpoints", f"{tmp_path / 'first.pt'},{tmp_path / 'second.pt'}")
    assert code == 2 and "cannot tell the width of checkpoint" in err and "first.pt" in err
    torch.save({"fc.weight": torch.randn(8, 8)}, tmp_path / "w32.pt")
    code, _, err = run("--checkpoints", f"{tmp_path / 'w32.pt'},.")
    assert code == 2 and "checkpoint . is not a file" in err


def test_non_finite_checkpoint_named_and_partial_results_kept(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, 0.0)
    sd = torch.load(paths[1], weights_only=True)
    sd["proj.weight"][0, 0] = math.inf
    torch.save(sd, paths[1])
    rep = diagnose_checkpoints(paths)
    assert rep.widths == [32, 128]
    assert any("width 64" in p and "'proj.weight'" in p for p in rep.problems)
    code, _, err = run("--checkpoints", ",".join(paths[:2]))
    assert code == 2 and "proj.weight" in err


def test_end_to_end_cli_on_tiny_mlp(tmp_path: Path) -> None:
    code, out, err = run(
        "--model",
        "mlp",
        "--widths",
        "16,32,64",
        "--steps",
        "8",
        "--rule",
        "sqrt",
        "--out",
        str(tmp_path),
        "--batch-size",
        "8",
    )
    data = json.loads((tmp_path / "report.json").read_text())
    assert code == data["exit_code"] == {"safe": 0, "drift": 1, "inconclusive": 3}[data["outcome"]], err
    # 8 steps cover a sliver of an AdamW timescale: never "safe", and the fix is spelled out
    assert data["outcome"] == "inconclusive" and data["timescales"] < 1
    assert any("--steps" in m and "--wd" in m for m in data["missing_evidence"])
    # stderr is not a terminal here: plain progress lines, not a bar
    assert "diagnose: rule sqrt · width 16: step 8/8" in err
    assert data["rule"] == "mup-wd-sqrt" and data["widths"] == [16, 32, 64]
    assert data["calibration"] is not None and "tau" in " ".join(data["notes"])
    # training history: init plus the recorded steps, the last at step 8
    steps = [s for s, _ in data["history"]["32"]]
    assert steps[0] == 0 and steps == sorted(steps)
    assert data["history"]["32"][-1][0] == 8
    assert data["coord"]["widths"] == [16, 32, 64]
    for stem in ("spectral_width", "spectral_history", "spectral_coord"):
        assert (tmp_path / f"{stem}.png").exists() and (tmp_path / f"{stem}.svg").exists()
    assert "hidden.0.weight" in out


def test_python_api_llama_and_user_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    rep = diagnose(
        "llama",
        [16, 32],
        rule="mup",
        steps=3,
        batch_size=4,
        coord=False,
        model_kwargs={"seq_len": 16, "depth": 1},
    )
    assert rep.rule == "mup" and set(rep.val_loss) == {16, 32}
    assert rep.layers["blocks.0.attn.q.weight"].param_class == "hidden"
    assert rep.layers["embed.weight"].param_class == "input"
    assert rep.calibration is not None  # two widths: no interval, but a point estimate
    assert rep.calibration.ci is None

    module = tmp_path / "tiny_factories.py"
    module.write_text(
        textwrap.dedent("""
        from torch import nn

        def make(width):
            if width == 48:
                raise RuntimeError("no model at this width")
            return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width),
                                 nn.ReLU(), nn.Linear(width, 1))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rep = diagnose("tiny_factories:make", [16, 32, 48], task="regression", steps=3, coord=False)
    assert rep.widths == [16, 32]
    assert any("width 48" in p and "no model at this width" in p for p in rep.problems)
    assert rep.layers["2.weight"].param_class == "hidden"


def test_api_needs_two_widths() -> None:
    with pytest.raises(DiagnosticError, match="at least two"):
        diagnose("mlp", [32], steps=1)

    def broken(width: int) -> nn.Module:
        raise RuntimeError("broken factory")

    with pytest.raises(DiagnosticError, match="broken factory"):
        diagnose(broken, [16, 32], task="regression", steps=1, coord=False)


def test_calibrate_from_reports_picks_the_bracketing_pair() -> None:
    from hptransfer.diagnostics.api import calibrate_from_reports
    from hptransfer.diagnostics.report import cross_width_report
    from hptransfer.diagnostics.spectral import LayerSpectrum

    def reports_for(e: float) -> object:
        # the slope reacts to wd twice as strongly as the law: alpha = 0.8 - e
        spectra = {
            w: {"fc.weight": LayerSpectrum("fc.weight", "Linear", (w, w), ((w / 32) ** (0.8 - e),), 1.0, 0.0)}
            for w in [*WIDTHS, 256]
        }
        return cross_width_report(spectra, lr_exponent=-1.0, wd_exponent=e, rule=f"e{e}")

    reps = {"sqrt": reports_for(0.5), "linear": reports_for(1.0), "constant": reports_for(0.0)}
    cal, pair = calibrate_from_reports(reps)  # type: ignore[misc,arg-type]
    assert set(pair) == {"sqrt", "linear"}  # their slopes bracket zero
    assert cal.exponent == pytest.approx(0.8)
    assert calibrate_from_reports({"sqrt": reps["sqrt"]}) is None  # type: ignore[dict-item]


def test_cli_compares_rules_and_custom_exponent(tmp_path: Path) -> None:
    code, out, err = run(
        "--model",
        "mlp",
        "--widths",
        "16,32",
        "--steps",
        "4",
        "--no-coord",
        "--rule",
        "sqrt,linear",
        "--json",
        "--out",
        str(tmp_path),
    )
    data = json.loads(out)
    assert code == data["exit_code"] == data["rules"]["mup-wd-sqrt"]["exit_code"], err
    assert data["exit_rule"] == "mup-wd-sqrt" and set(data["rules"]) == {"mup-wd-sqrt", "mup-wd-linear"}
    assert data["two_run_calibration"]["from_rules"] == ["mup-wd-sqrt", "mup-wd-linear"]
    assert isinstance(data["two_run_class_calibration"], dict)
    assert (tmp_path / "spectral_rules.png").exists()
    assert (tmp_path / "mup-wd-linear" / "report.json").exists()
    code, out, err = run(
        "--model", "mlp", "--widths", "16,32", "--steps", "2", "--no-coord", "--wd-exponent", "0.8", "--json"
    )
    assert json.loads(out)["rule"] == "mup-wd-0.8", err
    code, _, err = run("--checkpoints", "a.pt,b.pt", "--rule", "sqrt,linear")
    assert code == 2 and "one --rule" in err


def test_help_documents_every_exit_code() -> None:
    code, out, _ = run("--help")
    assert code == 0
    text = " ".join(out.split())
    for phrase in ("0 safe", "1 drift", "2 bad input", "3 inconclusive", "--threads"):
        assert phrase in text


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    import pickle

    empty = folder / "w64_empty.pt"
    empty.write_bytes(b"")
    plain = folder / "w64_plain.pt"
    plain.write_bytes(pickle.dumps({"fc.weight": [[1.0, 2.0]]}))
    noise = folder / "w64_noise.pt"
    noise.write_bytes(bytes(range(256)) * 4)
    obj = folder / "w64_obj.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "opt": textwrap.TextWrapper()}, obj)
    return {
        "empty": (empty, "is empty (0 bytes)"),
        "plain pickle": (plain, "not a torch.save file (a plain pickle)"),
        "random bytes": (noise, "not a torch.save file (neither a torch.save archive nor a pickle)"),
        "object": (obj, "holds a pickled object (textwrap.TextWrapper)"),
        "directory": (folder, "is not a file"),
    }


def test_unusable_checkpoint_files_are_one_clean_line(tmp_path: Path) -> None:
    good = _save_proxies(tmp_path, 0.0)[0]
    for kind, (path, cause) in _bad_files(tmp_path).items():
        code, _, err = run("--checkpoints", f"{good},{path}", "--widths", "32,64")
        assert code == 2, kind
        assert cause in err and str(path) in " ".join(err.split()), (kind, err)
        assert "Warning" not in err and "weights_only set to False" not in err, (kind, err)
        assert len(err.strip().splitlines()) <= 3, (kind, err)


def test_mixed_architectures_are_refused(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, 0.0)
    other = tmp_path / "mlp_w64.pt"
    torch.save({"layers.0.weight": torch.randn(64, 64), "layers.1.weight": torch.randn(1, 64)}, other)
    code, _, err = run("--checkpoints", f"{paths[0]},{other}")
    assert code == 2 and "not the same architecture" in err and "0 weight matrices in common" in err


def test_checkpoint_order_and_widths_checked_against_shapes(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, -0.25)
    forward = diagnose_checkpoints(paths)
    backward = diagnose_checkpoints(paths[::-1])  # wide -> narrow: same widths, same slopes
    assert forward.widths == backward.widths == WIDTHS
    assert backward.pooled is not None and forward.pooled is not None
    assert backward.pooled.alpha == pytest.approx(forward.pooled.alpha, abs=1e-9)
    assert forward.pooled.alpha == pytest.approx(-0.25, abs=1e-3)
    # --widths in the wrong order, or the wrong ratio, contradict the tensor shapes
    code, _, err = run("--checkpoints", ",".join(paths), "--widths", "128,64,32")
    assert code == 2 and "contradict the tensor shapes" in err
    code, _, err = run("--checkpoints", ",".join(paths), "--widths", "32,128,512")
    assert code == 2 and "contradict the tensor shapes" in err and "×4" in err


def test_checkpoints_two_widths_exit_3_and_steady_state_caveat(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, 0.0)
    code, out, err = run("--checkpoints", ",".join(paths[:2]), "--rule", "linear", "--json")
    data = json.loads(out)
    assert code == 3 and data["outcome"] == "inconclusive", err
    assert any("add a third width" in m for m in data["missing_evidence"])
    assert data["calibration"]["recommended"] is False
    assert any("steady-state caveat" in n and "unknown" in n for n in data["notes"])
    # told how long they trained: 100 steps of the llama config (tau = 640) is 0.16 tau
    cfg = tmp_path / "proxy.toml"
    cfg.write_text("[proxy]\nbase_width = 64\n[hyper]\nlr = 0.015625\nweight_decay = 0.1\n")
    code, out, _ = run(
        "--checkpoints", ",".join(paths), "--rule", "linear", "--steps", "100", "--config", str(cfg), "--json"
    )
    data = json.loads(out)
    assert code == 3 and data["timescales"] == pytest.approx(100 / 640)
    assert any("only 0.16 AdamW timescales" in n for n in data["notes"])
    assert any("train ≥ 1920 steps" in m for m in data["missing_evidence"])


def test_threads_option_sets_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    code, _, _ = run("--model", "mlp", "--widths", "16,32", "--steps", "1", "--no-coord", "--threads", "3")
    assert code in (0, 1, 3) and seen == [3]


def test_compare_rules_runs_each_rule_and_interpolates() -> None:
    from hptransfer.diagnostics import compare_rules
    from hptransfer.diagnostics.fit import calibrate_two_rules

    reports, two = compare_rules("mlp", [16, 32, 64], ["sqrt", "linear"], steps=6, batch_size=8, coord=False)
    assert list(reports) == ["mup-wd-sqrt", "mup-wd-linear"]
    for name, rep in reports.items():
        assert rep.rule == name and rep.widths == [16, 32, 64] and rep.pooled is not None
        assert rep.calibration is not None
    sqrt_fit, linear_fit = reports["mup-wd-sqrt"].pooled, reports["mup-wd-linear"].pooled
    assert sqrt_fit is not None and linear_fit is not None
    # the same initial weights and batches: only the wd exponent differs, so the slopes differ
    assert sqrt_fit.alpha != linear_fit.alpha
    assert two is not None
    cal, pair = two
    assert pair == ("mup-wd-sqrt", "mup-wd-linear")
    expected = calibrate_two_rules(sqrt_fit, 0.5, linear_fit, 1.0)
    assert cal.exponent == pytest.approx(expected.exponent)


def test_suggest_never_imports_the_diagnostics() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from hptransfer.cli.main import app\n"
        "res = CliRunner().invoke(app, ['suggest', '--width', '512'])\n"
        "assert res.exit_code == 0, res.output\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('hptransfer.diagnostics')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_default_steps_cover_four_timescales() -> None:
    # mlp: lr 2^-7; --wd 10 gives tau = 1/(lr·wd) = 12.8 steps at every width under linear
    code, out, err = run(
        "--model", "mlp", "--widths", "16,32,64", "--rule", "linear", "--wd", "10", "--no-coord", "--json"
    )
    data = json.loads(out)
    assert code == data["exit_code"], err
    assert data["history"]["64"][-1][0] == 52  # ceil(4 × 12.8)
    assert data["timescales"] == pytest.approx(52 / 12.8)
    assert not any("timescales" in m for m in data["missing_evidence"])


def test_untrained_checkpoints_are_inconclusive(tmp_path: Path) -> None:
    paths = _save_proxies(tmp_path, 0.0, trained=False)
    code, out, err = run("--checkpoints", ",".join(paths), "--rule", "linear", "--json")
    data = json.loads(out)
    assert code == 3 and data["outcome"] == "inconclusive", err
    assert sorted(data["untrained"]) == ["fc.weight", "proj.weight"]
    assert any("looks untrained" in m for m in data["missing_evidence"])
    assert any("look untrained" in n for n in data["notes"])


def test_checkpoints_per_class_split_condition_and_timescales(tmp_path: Path) -> None:
    """Attention grows as width^0.25 and the MLP shrinks as width^-0.25 under the linear rule:
    the per-class exponents (1.5 and 0.5) part, and the CLI prints them as the config takes
    them; the spectral-condition column and the timescales per width come along."""
    widths = [32, 64, 128, 256]
    paths = []
    for i, w in enumerate(widths):
        sd = {
            "blocks.0.attn.q.weight": _matrix(w, w, 2.0 * (w / 32) ** 0.25, 10 + i),
            "blocks.0.mlp.up.weight": _matrix(4 * w, w, 3.0 * (w / 32) ** -0.25, 20 + i),
            "head.weight": _matrix(100, w, 1.0, 30 + i),
        }
        torch.save(sd, tmp_path / f"w{w}.pt")
        paths.append(str(tmp_path / f"w{w}.pt"))
    cfg = tmp_path / "proxy.toml"
    cfg.write_text("[proxy]\nbase_width = 64\n[hyper]\nlr = 0.015625\nweight_decay = 0.1\n")
    args = ["--checkpoints", ",".join(paths), "--rule", "linear", "--steps", "100", "--config", str(cfg)]
    code, out, err = run(*args)
    assert code == 3, err  # drift, but 0.16 tau is too short a run to call it
    flat = " ".join(out.split())
    assert "attention and mlp, " in flat and "the intervals do not overlap" in flat
    # the readout's sigma_max is flat while its target sqrt(100/width) shrinks: e = 1 + 2·0.5
    assert "wd_exponents = {attention = 1.5, mlp = 0.5, output = 2.0} under [rule] in the config" in flat
    assert "σ/√(out/in)" in out and "hidden/attention" in out
    code, out, err = run(*args, "--json")
    data = json.loads(out)
    cal = data["class_calibration"]
    assert cal["attention"]["wd_exponent"] == pytest.approx(1.5, abs=1e-3)
    assert cal["mlp"]["wd_exponent"] == pytest.approx(0.5, abs=1e-3)
    assert cal["mlp"]["matrices"] == ["blocks.0.mlp.up.weight"]
    assert data["class_disagreements"][0] == ["attention", "mlp"]
    for w in widths:  # lr·wd is constant under the linear rule: 100 steps / 640 at every width
        assert data["timescales_by_width"][str(w)]["mlp"] == pytest.approx(100 / 640)
    layers = {row["name"]: row for row in data["layers"]}
    q = layers["blocks.0.attn.q.weight"]["spectral_condition"]["256"]
    assert q["target"] == pytest.approx(1.0) and q["ratio"] == pytest.approx(2.0 * 8**0.25, rel=1e-3)
    up = layers["blocks.0.mlp.up.weight"]["spectral_condition"]["32"]
    assert up["target"] == pytest.approx(2.0) and up["ratio"] == pytest.approx(1.5, rel=1e-3)
