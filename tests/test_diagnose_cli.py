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


def _matrix(out: int, inp: int, sigma: float, seed: int) -> torch.Tensor:
    """A matrix with singular values sigma·linspace(1, 0.5) (orthonormal factors by QR)."""
    g = torch.Generator().manual_seed(seed)
    r = min(out, inp)
    u, _ = torch.linalg.qr(torch.randn(out, r, generator=g))
    v, _ = torch.linalg.qr(torch.randn(inp, r, generator=g))
    return (u * (sigma * torch.linspace(1.0, 0.5, r))) @ v.T


def _save_proxies(folder: Path, hidden_alpha: float) -> list[str]:
    """State dicts of a 2-layer 'model' whose hidden sigma_max scales as width^hidden_alpha."""
    paths = []
    for i, w in enumerate(WIDTHS):
        sd = {
            "embed.weight": _matrix(100, w, 2.0, i),
            "fc.weight": _matrix(4 * w, w, 3.0 * (w / 32) ** hidden_alpha, 10 + i),
            "fc.bias": torch.zeros(4 * w),
            "proj.weight": _matrix(w, 4 * w, 2.0 * (w / 32) ** hidden_alpha, 20 + i),
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
        ([], "give --widths"),
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
    assert code == 2 and "cannot tell the width of first.pt" in err


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
    assert code == (0 if data["safe"] else 1), err
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
    assert code == (0 if data["rules"]["mup-wd-sqrt"]["safe"] else 1), err
    assert data["exit_rule"] == "mup-wd-sqrt" and set(data["rules"]) == {"mup-wd-sqrt", "mup-wd-linear"}
    assert data["two_run_calibration"]["from_rules"] == ["mup-wd-sqrt", "mup-wd-linear"]
    assert (tmp_path / "spectral_rules.png").exists()
    assert (tmp_path / "mup-wd-linear" / "report.json").exists()
    code, out, err = run(
        "--model", "mlp", "--widths", "16,32", "--steps", "2", "--no-coord", "--wd-exponent", "0.8", "--json"
    )
    assert json.loads(out)["rule"] == "mup-wd-0.8", err
    code, _, err = run("--checkpoints", "a.pt,b.pt", "--rule", "sqrt,linear")
    assert code == 2 and "one --rule" in err
