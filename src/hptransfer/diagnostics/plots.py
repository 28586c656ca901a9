"""Figures for the diagnostics (matplotlib, Agg backend; each saved as PNG and SVG).

* :func:`plot_sigma_vs_width`: sigma_max against width per layer, log-log, fitted slopes in the
  legend.
* :func:`plot_sigma_history`: sigma_max over training steps, one colour per width.
* :func:`plot_coord`: the coordinate check, mean |activation| against width per module, one
  panel per optimiser step.

Each function takes an output path *stem* (``out/spectral_width``) and returns the files
written (``…png``, ``…svg``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hptransfer.diagnostics.report import SpectralReport

__all__ = ["plot_coord", "plot_rules", "plot_sigma_history", "plot_sigma_vs_width", "save", "styles"]


def save(fig: Any, stem: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` (folders created); closes the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"  # not with_suffix: stems may hold dots (wd-0.81)
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def styles(n: int) -> list[tuple[Any, str]]:
    """``n`` distinct (colour, marker) pairs: ten colours times ten markers, so up to 100 lines
    stay tell-apart (colours alone repeat after 10 or 20)."""
    cmap = plt.get_cmap("tab10")
    return [(cmap(i % 10), _MARKERS[(i // 10) % len(_MARKERS)]) for i in range(n)]


def _legend_outside(ax: Any, n: int, fontsize: float = 6.5) -> None:
    """Legend to the right of the axes (never over the data), in columns of at most 28."""
    ax.legend(
        fontsize=fontsize,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        ncol=max(1, math.ceil(n / 28)),
        frameon=False,
    )


def plot_sigma_vs_width(report: SpectralReport, stem: str | Path) -> list[Path]:
    """sigma_max vs width (log-log) for every fitted matrix, with its fitted line.

    Every matrix with a fit is drawn (the title gives the count); gated layers solid, others
    dotted; drifting layers bold with a "DRIFT" label, undecided ones dashed. The legend sits
    outside the axes.
    """
    rows = [r for r in report.layers.values() if r.fit is not None]
    gated = [r for r in rows if r.param_class in report.gate]
    others = [r for r in rows if r.param_class not in report.gate]
    shown = gated + others
    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    for row, (colour, marker) in zip(shown, styles(len(shown))):
        assert row.fit is not None and row.verdict is not None
        ws = sorted(row.sigma)
        is_gated = row.param_class in report.gate
        drifts = is_gated and row.verdict.verdict.drifts
        undecided = is_gated and not row.verdict.conclusive
        style = ":" if not is_gated else ("--" if undecided else "-")
        lw = 2.6 if drifts else 1.1
        ax.plot(ws, [row.sigma[w] for w in ws], marker, color=colour, ms=6 if drifts else 4, ls="none")
        grid = [min(ws) * (max(ws) / min(ws)) ** (t / 20) for t in range(21)]
        ci = "" if row.fit.ci is None else f" ±{(row.fit.ci[1] - row.fit.ci[0]) / 2:.2f}"
        tag = "DRIFT " if drifts else ""
        ax.plot(
            grid,
            [row.fit.predict(w) for w in grid],
            style,
            color=colour,
            lw=lw,
            marker=marker,
            markevery=[10],
            ms=4,
            label=f"{tag}{row.name} ({row.param_class}): α={row.fit.alpha:+.2f}{ci}, {row.verdict.verdict}",
        )
    if report.pooled is not None:
        p = report.pooled
        ax.plot(
            p.widths,
            p.values,
            "s-",
            color="black",
            lw=2.2,
            ms=6,
            label=f"pooled {'/'.join(report.gate)} (geo. mean): α={p.alpha:+.2f}",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(report.widths, [str(w) for w in report.widths])
    ax.set_xlabel("width")
    ax.set_ylabel("σ_max (top singular value)")
    title = "σ_max vs width" + (f" · rule {report.rule}" if report.rule else "")
    title += f" · {report.outcome.upper()}"
    if report.drifting:
        title += f" ({len(report.drifting)} drifting)"
    title += f"\nall {len(shown)} fitted matrices drawn ({len(gated)} {'/'.join(report.gate)}, solid)"
    ax.set_title(title, fontsize=10)
    _legend_outside(ax, len(shown) + (report.pooled is not None))
    ax.grid(True, which="both", alpha=0.3)
    return save(fig, stem)


def plot_sigma_history(report: SpectralReport, stem: str | Path) -> list[Path]:
    """sigma_max over training steps: geometric mean over the gated layers, one line per width
    (thin lines: each gated layer)."""
    if not report.history:
        raise ValueError("the report has no training history (checkpoints only?)")
    gate_names = [r.name for r in report.layers.values() if r.param_class in report.gate]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    cmap = plt.get_cmap("viridis")
    widths = sorted(report.history)
    for i, w in enumerate(widths):
        colour = cmap(i / max(1, len(widths) - 1))
        hist = report.history[w]
        steps = [s for s, _ in hist]
        for name in gate_names:
            ys = [d.get(name, math.nan) for _, d in hist]
            ax.plot(steps, ys, "-", color=colour, lw=0.5, alpha=0.35)
        geo = []
        for _, d in hist:
            vals = [d[n] for n in gate_names if n in d and d[n] > 0]
            geo.append(math.exp(sum(map(math.log, vals)) / len(vals)) if vals else math.nan)
        ax.plot(steps, geo, "-", color=colour, lw=2.2, label=f"width {w}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"σ_max ({'/'.join(report.gate)} matrices)")
    ax.set_title(
        "σ_max over training"
        + (f" · rule {report.rule}" if report.rule else "")
        + f"\nthin: each of the {len(gate_names)} {'/'.join(report.gate)} matrices; bold: geometric mean",
        fontsize=10,
    )
    _legend_outside(ax, len(widths), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return save(fig, stem)


def plot_coord(coord: Any, stem: str | Path, *, max_panels: int = 5) -> list[Path]:
    """The coordinate check: mean |activation| vs width per module, one panel per step.

    Every module gets its own (colour, marker) pair; modules whose scale moves with width
    (``coord.unstable()``) are drawn bold and labelled UNSTABLE. The legend sits outside.
    """
    steps = list(range(coord.steps + 1))
    if len(steps) > max_panels:
        idx = [round(i * (len(steps) - 1) / (max_panels - 1)) for i in range(max_panels)]
        steps = sorted(set(idx))
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.6), sharey=True, squeeze=False)
    modules = list(coord.slopes)
    bad = coord.unstable()
    for ax, step in zip(axes[0], steps):
        for name, (colour, marker) in zip(modules, styles(len(modules))):
            ws = [w for w in coord.widths if name in coord.data[w][step]]
            ys = [coord.data[w][step][name] for w in ws]
            if ws and all(y > 0 for y in ys):
                flagged = name in bad
                ax.plot(
                    ws,
                    ys,
                    "-",
                    marker=marker,
                    ms=5 if flagged else 3,
                    lw=2.4 if flagged else 0.9,
                    color=colour,
                    label=("UNSTABLE " if flagged else "") + name,
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"step {step}", fontsize=9)
        ax.set_xlabel("width")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("mean |activation|")
    _legend_outside(axes[0][-1], len(modules), fontsize=6)
    fig.suptitle(
        "coordinate check"
        + (f" · rule {coord.rule}" if coord.rule else "")
        + f" · {len(modules)} modules"
        + (f" · unstable: {', '.join(bad[:4])}{' …' if len(bad) > 4 else ''}" if bad else " · flat in width"),
        fontsize=10,
    )
    return save(fig, stem)


def plot_rules(reports: dict[str, SpectralReport], stem: str | Path, *, clip: float = 4.0) -> list[Path]:
    """One panel per rule: gated sigma_max relative to the smallest width (thin: each layer,
    bold: pooled geometric mean), with the [ratio_low, ratio_high] band shaded. The y axis is
    clipped to ``[1/clip, clip]`` (titles give the true pooled ratio)."""
    names = list(reports)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        rep = reports[name]
        th = rep.thresholds
        drifting = set(rep.drifting)
        clipped = 0
        for row in rep.gated():
            ws = sorted(row.sigma)
            rel = [row.sigma[w] / row.sigma[ws[0]] for w in ws]
            clipped += any(not 1 / clip <= r <= clip for r in rel)
            flagged = row.name in drifting
            ax.plot(
                ws,
                rel,
                "-",
                color="tab:red" if flagged else "tab:blue",
                lw=1.6 if flagged else 0.6,
                alpha=0.9 if flagged else 0.45,
            )
        if rep.pooled is not None:
            p = rep.pooled
            ax.plot(
                p.widths,
                [v / p.values[0] for v in p.values],
                "o-",
                color="black",
                lw=2.2,
                ms=4,
                label=f"pooled α={p.alpha:+.2f}",
            )
        ax.plot(
            [], [], "-", color="tab:blue", lw=0.6, label=f"{len(rep.gated())} {'/'.join(rep.gate)} matrices"
        )
        ax.plot([], [], "-", color="tab:red", lw=1.6, label=f"{len(drifting)} drifting")
        if clipped:
            ax.plot([], [], " ", label=f"{clipped} leave the clipped y range")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        ax.axhspan(th.ratio_low, th.ratio_high, color="tab:green", alpha=0.12)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(1 / clip, clip)
        ax.set_xticks(rep.widths, [str(w) for w in rep.widths])
        ratio = "-" if rep.pooled is None else f"{rep.pooled.ratio:.3g}"
        ax.set_title(
            f"{name}\nratio {ratio} · "
            + (f"DRIFT: {rep.drift_directions()}" if rep.outcome == "drift" else rep.outcome),
            fontsize=9,
            color={"safe": "black", "drift": "tab:red"}.get(rep.outcome, "tab:orange"),
        )
        ax.set_xlabel("width")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"σ_max / σ_max at width {min(reports[names[0]].widths)} (clipped)")
    return save(fig, stem)
