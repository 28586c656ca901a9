"""Figures of a proxy study: optimisation history (Optuna's own matplotlib plot) and the lr / wd
slices at the proxy width with a second axis giving the value each base setting becomes at the
target width (hidden matrices), and the transferred best marked.

matplotlib with the Agg backend; PNG and SVG.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hptransfer.scaling import ProxyConfig, suggest
from hptransfer.tuning.study import study_config, study_info
from hptransfer.tuning.sweep import _replacing
from hptransfer.tuning.transfer import best_config, ranked_trials

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

__all__ = ["plot_study"]


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        with _replacing(path) as tmp:  # a full disk leaves the previous figure, not half a new one
            fig.savefig(tmp, dpi=130, bbox_inches="tight", format=ext)
        paths.append(path)
    return paths


def plot_study(
    study: optuna.Study, out_dir: str | Path, target_width: int, *, prefix: str = "optuna"
) -> list[Path]:
    """Write ``{prefix}_history.{png,svg}`` and ``{prefix}_slice.{png,svg}`` into ``out_dir``.

    The slice figure has one panel per tuned base parameter among lr and weight decay: every
    finished trial's final value against its base value (log axis) at the proxy width; the top axis
    reads the same base value as the hidden-matrix value at ``target_width`` under the study's rule.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization.matplotlib import plot_optimization_history

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = study_config(study)
    info = study_info(study)
    proxy_width = info.get("proxy_width", cfg.base_width)
    written: list[Path] = []

    # Optuna's plot sets the global style (ggplot); the context restores it afterwards.
    with warnings.catch_warnings(), plt.style.context("default"):
        warnings.simplefilter("ignore", ExperimentalWarning)
        ax = plot_optimization_history(study)
        ax.set_title(
            f"{study.study_name}: optimisation history at width {proxy_width} (rule {cfg.rule})", fontsize=10
        )
        ax.set_ylabel("validation loss")
        fig = ax.figure
        assert isinstance(fig, Figure)  # Optuna draws into a figure of its own
        written += _save(fig, out, f"{prefix}_history")
        plt.close(fig)

    trials = ranked_trials(study, cfg)
    names = [n for n in ("lr", "weight_decay") if any(n in t.params for t in trials)]
    if not names:
        return written
    with plt.style.context("default"):
        written += _slices(study, trials, names, cfg, out, prefix, proxy_width, target_width)
    return written


def _slices(
    study: optuna.Study,
    trials: Sequence[optuna.trial.FrozenTrial],
    names: Sequence[str],
    cfg: ProxyConfig,
    out: Path,
    prefix: str,
    proxy_width: int,
    target_width: int,
) -> list[Path]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    written: list[Path] = []
    best = best_config(study)
    target = suggest(best, target_width)
    m = target_width / cfg.base_width
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        drawn = [(t.params[name], t.value, t.number) for t in trials if name in t.params]
        xs = [x for x, _, _ in drawn]
        ys = [float(y) for _, y, _ in drawn if y is not None]  # ranked trials all have a value
        numbers = [n for _, _, n in drawn]
        sc = ax.scatter(xs, ys, c=numbers, cmap="viridis", s=18, alpha=0.85)
        ax.set_xscale("log")
        best_value = getattr(best, name)
        ax.axvline(best_value, color="crimson", ls="--", lw=1)
        if name == "lr":
            scale = target["hidden"].lr / best.lr
            label = f"base lr at width {cfg.base_width}"
            top = f"hidden-matrix lr at width {target_width}"
            shown = target["hidden"].lr
        else:
            scale = target["hidden"].weight_decay / best.weight_decay if best.weight_decay else m
            label = f"base weight decay at width {cfg.base_width} (torch AdamW)"
            top = f"hidden-matrix weight decay at width {target_width}"
            shown = target["hidden"].weight_decay
        sec = ax.secondary_xaxis("top", functions=(lambda x, s=scale: x * s, lambda x, s=scale: x / s))
        sec.set_xlabel(top, fontsize=9)
        ax.xaxis.set_minor_formatter(NullFormatter())
        sec.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylabel("validation loss at proxy width" if ax is axes[0][0] else "")
        ax.annotate(
            f"best → {shown:.3g} at width {target_width}",
            xy=(best_value, min(ys)),
            xytext=(6, 8),
            textcoords="offset points",
            color="crimson",
            fontsize=8,
        )
        finite = [y for y in ys if math.isfinite(y)]
        if finite:
            lo, hi = min(finite), sorted(finite)[int(0.9 * (len(finite) - 1))]
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
    fig.colorbar(sc, ax=axes[0].tolist(), label="trial number", pad=0.01)
    fig.suptitle(
        f"{study.study_name}: slices at proxy width {proxy_width}; top axis: the same "
        f"setting at width {target_width} ({cfg.rule})",
        fontsize=10,
        y=1.04,
    )
    written += _save(fig, out, f"{prefix}_slice")
    plt.close(fig)
    return written
