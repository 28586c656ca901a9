"""The muP coordinate check on a tiny MLP: muP keeps activation scales flat in width, SP does not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hptransfer.diagnostics.coord import OUTPUT, coord_check
from hptransfer.scaling import ProxyConfig

WIDTHS = [32, 64, 128, 256]


def _factory(w: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(16, w), nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 4)
    )


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 16, generator=g), torch.randn(64, 4, generator=g)


CFG = ProxyConfig(
    name="tiny",
    base_width=32,
    head_dim=None,
    lr=2**-6,
    weight_decay=0.0,
    init_std=32**-0.5,
    output_init_std=1 / 32,
)


def test_mup_flat_sp_grows(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    loss = nn.functional.mse_loss
    mup = coord_check(_factory, WIDTHS, batch, loss, config=CFG, rule="mup", steps=3)
    sp = coord_check(_factory, WIDTHS, batch, loss, config=CFG, rule="sp", steps=3)
    assert mup.rule == "mup" and sp.rule == "sp"
    assert mup.unstable() == []
    # hidden activations and the output blow up with width under SP after an Adam update
    assert {"2", "4", OUTPUT} <= set(sp.unstable())
    for module in ("2", "4"):
        assert sp.worst(module) > 0.3
        assert mup.worst(module) < 0.1
    # records init (step 0) plus one entry per step, for every width
    assert all(len(mup.data[w]) == 4 for w in WIDTHS)
    assert all(len(s) == 4 for s in mup.slopes.values())


def test_plain_adamw_mode_and_include(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    rep = coord_check(_factory, [32, 128], batch, nn.functional.mse_loss, lr=1e-2, steps=2, include=r"^[24]$")
    assert set(rep.slopes) == {"2", "4", OUTPUT}
    assert rep.rule is None
    assert rep.to_dict()["widths"] == [32, 128]


def test_failing_width_is_named_and_others_kept(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    def factory(w: int) -> nn.Module:
        if w == 64:
            raise RuntimeError("out of memory (simulated)")
        return _factory(w)

    rep = coord_check(factory, [32, 64, 128], batch, nn.functional.mse_loss, lr=1e-2, steps=1)
    assert rep.widths == [32, 128]
    assert any("width 64" in p and "simulated" in p for p in rep.problems)


def test_needs_two_widths_and_an_optimiser_choice(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="two"):
        coord_check(_factory, [32], batch, nn.functional.mse_loss, lr=1e-2)
    with pytest.raises(ValueError, match="lr"):
        coord_check(_factory, [32, 64], batch, nn.functional.mse_loss)
