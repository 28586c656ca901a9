import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hptransfer.stn.hyper import HyperSpec
from hptransfer.stn.tuner import (
    StnCheckpointError,
    StnConfig,
    StnDivergedError,
    StnRunawayWarning,
    StnTuner,
    TensorBatches,
    load_checkpoint,
)

torch.set_num_threads(1)  # the machine's 2 cores are shared

# -- known answer: ridge regression (issue 14's task) ---------------------------------------------
# X 200x50, noise sd 8, 1000 validation points; the tuner's training objective
# mean((Xw - y)^2) + c/2 ||w||^2 has w*(c) = (X^T X + n c/2 I)^-1 X^T y, and a dense grid over c
# gives the validation-optimal strength. benchmarks/stn_ridge.py runs the full 12-run version.
N, NV, D = 200, 1000, 50


def _ridge_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(D, 1, generator=g)
    x = torch.randn(N, D, generator=g)
    y = x @ w_true + 8.0 * torch.randn(N, 1, generator=g)
    xv = torch.randn(NV, D, generator=g)
    yv = xv @ w_true + 8.0 * torch.randn(NV, 1, generator=g)
    return x, y, xv, yv


def _wstar(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    x, y = x.double(), y.double()
    return torch.linalg.solve(x.T @ x + N * c / 2 * torch.eye(D, dtype=torch.float64), x.T @ y)


def _val(data: tuple[torch.Tensor, ...], c: float) -> float:
    x, y, xv, yv = data
    return float(((xv.double() @ _wstar(x, y, c) - yv.double()) ** 2).mean())


def _ridge_optimum(data: tuple[torch.Tensor, ...]) -> float:
    grid = torch.logspace(-4, 2, 1601, dtype=torch.float64).tolist()
    return min(grid, key=lambda c: _val(data, c))


@pytest.mark.parametrize("factor", [0.01, 100.0])
def test_ridge_from_100x_below_and_above_reaches_the_optimum_with_default_loop(factor: float) -> None:
    data = _ridge_data(0)
    best = _ridge_optimum(data)
    assert 0.1 < best < 2.0  # interior, far from both starts in log space
    x, y, xv, yv = data
    # the loop settings are StnConfig's defaults (the CLI's too); lr is the model's Adam lr
    tuner = StnTuner(
        lambda: nn.Linear(D, 1, bias=False),
        [HyperSpec("l2", best * factor, 1e-4, 1e2)],
        loss="mse",
        config=StnConfig(lr=0.03, seed=1, checkpoint_every=0),
    )
    res = tuner.fit(TensorBatches(x, y, N), TensorBatches(xv, yv, NV), steps=3000)
    c = res.values["l2"]
    assert abs(math.log(c / best)) < 0.05, (c, best)
    assert _val(data, c) < _val(data, best * factor)
    assert not res.extra["warnings"]


def test_ridge_linearized_delta_stn_learns_the_exact_response() -> None:
    x, y, xv, yv = data = _ridge_data(1)
    best = _ridge_optimum(data)
    cfg = StnConfig(lr=0.03, seed=1, linearize=True, checkpoint_every=0)
    tuner = StnTuner(
        nn.Sequential(nn.Linear(D, 1, bias=False)), [HyperSpec("l2", 0.05, 1e-4, 1e2)], loss="mse", config=cfg
    )
    res = tuner.fit(TensorBatches(x, y, N), TensorBatches(xv, yv, NV), steps=1500)
    c = res.values["l2"]
    assert abs(math.log(c / best)) < 0.1, (c, best)
    # Delta-STN: W_0 is the best response at the current strength, the response Phi its derivative
    layer = tuner.model.stn_layers()["net.0"]
    ws = _wstar(x, y, c)
    assert float((layer.weight.detach().double().T - ws).norm() / ws.norm()) < 0.02
    lam = N * c / 2
    dws = -lam * torch.linalg.solve(x.double().T @ x.double() + lam * torch.eye(D, dtype=torch.float64), ws)
    dw = (layer.gate.detach()[0, 0] * layer.hweight.detach().double() / tuner.hyper.scale[0]).T
    cos = float((dw * dws).sum() / dw.norm() / dws.norm())
    assert cos > 0.98 and 0.7 < float(dw.norm() / dws.norm()) < 1.4


def test_uncentred_stn_runs_away_and_warns() -> None:
    """The failure the defaults fix: the original (uncentred) STN from 100x above the optimum."""
    x, y, xv, yv = data = _ridge_data(0)
    start = 100 * _ridge_optimum(data)
    cfg = StnConfig(
        lr=0.03, warmup_steps=200, delta=False, trust=None, anneal=0.0, seed=1, checkpoint_every=0
    )
    tuner = StnTuner(
        lambda: nn.Linear(D, 1, bias=False), [HyperSpec("l2", start, 1e-4, 1e2)], loss="mse", config=cfg
    )
    with pytest.warns(StnRunawayWarning, match="upper bound|random walk"):
        res = tuner.fit(TensorBatches(x, y, N), TensorBatches(xv, yv, NV), steps=1500)
    assert res.values["l2"] > 10 * start / 100


# -- resume, errors ---------------------------------------------------------------------------------
def _cls_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(96, generator=g) > 0).long()
    return x[:64], y[:64], x[64:], y[64:]


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


HYPERS = [
    HyperSpec("dropout", 0.2, 0.0, 0.9),
    HyperSpec("l2", 1e-3, 1e-6, 1.0),
    HyperSpec("input_noise", 0.1, 1e-3, 1.0),
    HyperSpec("label_smoothing", 0.05, 0.0, 0.3),
    HyperSpec("input_mask", 1.0, 0.0, 3.0),
]


def _tuner(delta: bool, **kw: object) -> StnTuner:
    cfg = StnConfig(lr=1e-2, hyper_lr=1e-2, checkpoint_every=7, delta=delta, seed=3, **kw)  # type: ignore[arg-type]
    torch.manual_seed(0)  # the plain model's init
    return StnTuner(_mlp(), HYPERS, loss="cross_entropy", config=cfg)


def _loaders() -> tuple[DataLoader, TensorBatches]:
    x, y, xv, yv = _cls_data()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True), TensorBatches(xv, yv, 16)


class _Kill(Exception):
    pass


@pytest.mark.parametrize("delta", [False, True])
def test_resume_after_kill_retraces_trajectory(tmp_path: Path, delta: bool) -> None:
    train, val = _loaders()
    full = _tuner(delta).fit(train, val, steps=30, checkpoint=tmp_path / "a.pt")

    def kill(tuner: StnTuner, record: dict) -> None:
        if record["step"] == 17:  # between checkpoints at 14 and 21
            raise _Kill

    train, val = _loaders()
    with pytest.raises(_Kill):
        _tuner(delta).fit(train, val, steps=30, checkpoint=tmp_path / "b.pt", callback=kill)
    assert int(load_checkpoint(tmp_path / "b.pt")["step"]) == 14
    train, val = _loaders()
    tuner = _tuner(delta)
    torch.manual_seed(12345)  # the global RNG state before resuming must not matter
    resumed = tuner.fit(train, val, steps=30, checkpoint=tmp_path / "b.pt", resume=True)
    assert resumed.trajectory["phase"] == full.trajectory["phase"]
    for key in full.trajectory:
        if key != "phase":
            flat = [v for row in full.trajectory[key] for v in (row if isinstance(row, list) else [row])]
            got = [v for row in resumed.trajectory[key] for v in (row if isinstance(row, list) else [row])]
            assert got == pytest.approx(flat, rel=1e-5, abs=1e-7), key
    a = load_checkpoint(tmp_path / "a.pt")["model"]
    b = load_checkpoint(tmp_path / "b.pt")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_corrupt_or_mismatched_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    train, val = _loaders()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(StnCheckpointError, match="corrupt"):
        _tuner(False).fit(train, val, steps=5, checkpoint=bad, resume=True)
    good = tmp_path / "good.pt"
    _tuner(False).fit(train, val, steps=5, checkpoint=good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(StnCheckpointError, match="corrupt"):
        _tuner(False).fit(train, val, steps=5, checkpoint=trunc, resume=True)
    with pytest.raises(StnCheckpointError, match=r"delta False -> True"):
        _tuner(True).fit(train, val, steps=5, checkpoint=good, resume=True)
    with pytest.raises(StnCheckpointError, match="no checkpoint"):
        _tuner(False).fit(train, val, steps=5, checkpoint=tmp_path / "missing.pt", resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    calls = {"n": 0}

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = nn.functional.cross_entropy(out, y)
        return value * float("nan") if calls["n"] > 20 else value

    train, val = _loaders()
    tuner = StnTuner(_mlp(), HYPERS[:2], loss=loss, config=StnConfig(checkpoint_every=5))
    with pytest.raises(StnDivergedError, match=r"non-finite .* loss at step .*good checkpoint"):
        tuner.fit(train, val, steps=40, checkpoint=tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    assert 0 < int(state["step"]) <= 20
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_bad_hyperparameter_names() -> None:
    with pytest.raises(ValueError, match=r"not used by this model; available: dropout, dropout\.2"):
        StnTuner(_mlp(), [HyperSpec("dropout.0", 0.1, 0.0, 0.5)])
    with pytest.raises(ValueError, match="learning rate"):
        StnTuner(_mlp(), [HyperSpec("lr", 1e-3, 1e-5, 1.0, transform="log")])
    with pytest.raises(ValueError, match="label_smoothing"):
        StnTuner(_mlp(), [HyperSpec("label_smoothing", 0.1, 0.0, 0.5)], loss="mse")
    no_dropout = nn.Sequential(nn.Linear(6, 2))
    with pytest.raises(ValueError, match="not used"):
        StnTuner(no_dropout, [HyperSpec("dropout", 0.1, 0.0, 0.5)])


def test_tuned_dropout_moves_and_export_matches() -> None:
    train, val = _loaders()
    tuner = StnTuner(
        _mlp(),
        [HyperSpec("dropout.2", 0.3, 0.0, 0.9)],
        config=StnConfig(lr=1e-2, hyper_lr=3e-2, checkpoint_every=0),
    )
    res = tuner.fit(train, val, steps=40)
    traj = res.trajectory["value/dropout.2"]
    assert len(traj) == res.train_steps + res.val_steps == len(res.trajectory["step"])
    assert traj[-1] != pytest.approx(0.3, abs=1e-4)  # the validation steps moved it
    plain = tuner.export_model().eval()
    _, _, xv, yv = _cls_data()
    exported = float(nn.functional.cross_entropy(plain(xv), yv).detach())
    assert exported == pytest.approx(tuner.evaluate([(xv, yv)]), rel=1e-5)


def test_integer_input_mask_uses_unbiased_stochastic_rounding() -> None:
    tuner = StnTuner(_mlp(), [HyperSpec("input_mask", 1.5, 0.0, 4.0)])
    assert tuner.hyper.specs[0].integer  # input_mask is relaxed to a continuous value
    torch.manual_seed(0)
    x = torch.ones(8, 6)
    zeros = [int((tuner._augment(x, [1.5]) == 0).sum(dim=1)[0]) for _ in range(400)]
    assert set(zeros) == {1, 2}  # each draw masks an integer count: floor or ceil
    assert sum(zeros) / len(zeros) == pytest.approx(1.5, abs=0.1)
    with pytest.raises(ValueError, match="train_only"):
        StnTuner(_mlp(), [HyperSpec("dropout", 0.1, 0.0, 0.5, train_only=False)])
