"""Diagnostic figures: PNG and SVG written, one per call, with the layers drawn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hptransfer.diagnostics.coord import coord_check
from hptransfer.diagnostics.plots import plot_coord, plot_sigma_history, plot_sigma_vs_width
from hptransfer.diagnostics.report import cross_width_report
from hptransfer.diagnostics.spectral import LayerSpectrum

WIDTHS = [64, 128, 256]


def _report():  # type: ignore[no-untyped-def]
    def spec(name: str, shape: tuple[int, int], s: float) -> LayerSpectrum:
        return LayerSpectrum(name, "Linear", shape, (s,), 2 * s, 0.0)

    spectra = {
        w: {
            "fc.weight": spec("fc.weight", (w, w), (w / 64) ** 0.3),
            "head.weight": spec("head.weight", (10, w), 1.0),
        }
        for w in WIDTHS
    }
    return cross_width_report(spectra, rule="mup")


def _check(paths: list[Path], stem: Path) -> None:
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert paths[0] == stem.parent / f"{stem.name}.png"
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigma_vs_width_and_history(tmp_path: Path) -> None:
    rep = _report()
    paths = plot_sigma_vs_width(rep, tmp_path / "w")
    _check(paths, tmp_path / "w")
    svg = (tmp_path / "w.svg").read_text()
    assert "fc.weight" in svg and "DRIFT" in svg  # legend and title are text in the SVG
    with pytest.raises(ValueError, match="history"):
        plot_sigma_history(rep, tmp_path / "h")
    rep.history = {w: [(s, {"fc.weight": 1.0 + s / 10}) for s in (0, 5, 10)] for w in WIDTHS}
    _check(plot_sigma_history(rep, tmp_path / "sub" / "h_wd-0.81"), tmp_path / "sub" / "h_wd-0.81")


def test_coord_plot(tmp_path: Path) -> None:
    def factory(w: int) -> nn.Module:
        return nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, 1))

    torch.manual_seed(0)
    rep = coord_check(
        factory, [16, 32], (torch.randn(8, 4), torch.randn(8, 1)), nn.functional.mse_loss, lr=1e-2, steps=6
    )
    _check(plot_coord(rep, tmp_path / "c"), tmp_path / "c")
    assert "step 6" in (tmp_path / "c.svg").read_text()


def test_every_matrix_drawn_and_drifting_ones_flagged(tmp_path: Path) -> None:
    def spec(name: str, shape: tuple[int, int], s: float) -> LayerSpectrum:
        return LayerSpectrum(name, "Linear", shape, (s,), 2 * s, 0.0)

    names = [f"blocks.{i}.fc.weight" for i in range(14)]
    spectra = {
        w: {n: spec(n, (w, w), (w / 64) ** (0.4 if i == 3 else 0.0)) for i, n in enumerate(names)}
        | {"head.weight": spec("head.weight", (10, w), 1.0)}
        for w in WIDTHS
    }
    rep = cross_width_report(spectra, rule="mup")
    assert rep.drifting == ["blocks.3.fc.weight"]
    plot_sigma_vs_width(rep, tmp_path / "w")
    svg = (tmp_path / "w.svg").read_text()
    for name in [*names, "head.weight"]:
        assert name in svg  # 14 hidden matrices and the readout: all in the legend
    assert "all 15 fitted matrices drawn" in svg and "DRIFT blocks.3.fc.weight" in svg


def test_styles_are_distinct_and_legend_sits_outside() -> None:
    import matplotlib.pyplot as plt

    from hptransfer.diagnostics.plots import _legend_outside, styles

    pairs = styles(22)
    assert len({(tuple(c), m) for c, m in pairs}) == 22  # 22 modules: no repeated look
    fig, ax = plt.subplots()
    for i in range(22):
        ax.plot([1, 2], [i, i + 1], label=f"m{i}")
    _legend_outside(ax, 22)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # to the right of the data
    plt.close(fig)


def test_coord_plot_marks_unstable_modules(tmp_path: Path) -> None:
    def factory(w: int) -> nn.Module:
        return nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, 1))

    torch.manual_seed(0)
    # plain AdamW (no muP): the hidden activations grow with width after one update
    rep = coord_check(
        factory,
        [16, 64, 256],
        (torch.randn(8, 4), torch.randn(8, 1)),
        nn.functional.mse_loss,
        lr=0.1,
        steps=2,
    )
    assert rep.unstable()
    plot_coord(rep, tmp_path / "c")
    svg = (tmp_path / "c.svg").read_text()
    assert f"UNSTABLE {rep.unstable()[0]}" in svg
