"""Outputs of an STN run: the trajectory plot, a proxy config for ``hptransfer suggest``, a JSON.

Example:
    >>> from hptransfer.stn.report import proxy_toml
    >>> print(proxy_toml({"weight_decay": 0.1}, lr=1e-3, width=256, name="stn-classify").splitlines()[0])
    # Written by `hptransfer stn`: tuned base hyperparameters at the proxy width.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_trajectory", "proxy_toml", "write_outputs"]


def _smooth(values: Sequence[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_trajectory(
    trajectory: Mapping[str, Sequence[Any]], stem: str | Path, log_names: Sequence[str] = (), title: str = ""
) -> list[Path]:
    """Hyperparameter values (one panel each, ± sigma band not drawn) and losses vs step.

    Writes ``<stem>.png`` and ``<stem>.svg`` with the Agg backend; returns the two paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k.removeprefix("value/") for k in trajectory if k.startswith("value/")]
    n = len(names) + 1
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    steps = list(trajectory["step"])
    for ax, name in zip(axes.flat, names):
        ax.plot(steps, trajectory[f"value/{name}"], color="C0", lw=1.5)
        if name in log_names:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax = axes.flat[len(names)]
    phase = list(trajectory["phase"])
    loss = list(trajectory["loss"])
    for which, color in (("train", "C1"), ("val", "C2")):
        xs = [s for s, p in zip(steps, phase) if p == which]
        ys = [v for v, p in zip(loss, phase) if p == which]
        if xs:
            ax.plot(xs, _smooth(ys, 10), color=color, lw=1, label=f"{which} step loss (smoothed)")
    if trajectory.get("eval_step"):
        ax.plot(
            trajectory["eval_step"], trajectory["eval_loss"], "o-", color="k", ms=3, label="validation loss"
        )
    ax.set_title("loss")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for extra in list(axes.flat)[n:]:
        extra.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths


def proxy_toml(
    values: Mapping[str, float],
    *,
    lr: float,
    width: int,
    name: str,
    base: Any = None,
) -> str:
    """A ``ProxyConfig`` TOML (``hptransfer suggest --config`` reads it) with what the run tuned.

    ``base`` (a :class:`~hptransfer.scaling.ProxyConfig`, default: its defaults) supplies every
    field the STN did not set. Set here: ``name``, ``base_width`` (the width the STN trained
    at), ``lr`` (the run's lr: an STN cannot tune it) and ``weight_decay``: the tuned AdamW
    ``weight_decay`` (``weight_decay`` or ``weight_decay.hidden``), the value ``suggest`` scales
    with width. A run that tuned only the ``l2`` coefficient trained with AdamW weight decay 0,
    so 0 is written; the L2 coefficient is not an AdamW weight decay and is not carried (it is in
    ``hyper.json``). Dropout, label smoothing and input noise go to ``hyper.json`` only.
    """
    from dataclasses import replace

    from hptransfer.scaling import ProxyConfig

    cfg = base if base is not None else ProxyConfig(name=name, base_width=width)
    wd_key = next((k for k in ("weight_decay", "weight_decay.hidden") if k in values), None)
    wd = float(values[wd_key]) if wd_key else (0.0 if any(k.startswith("l2") for k in values) else None)
    fields: dict[str, Any] = {"name": name, "base_width": width, "lr": lr}
    if wd is not None:
        fields["weight_decay"] = wd
    cfg = replace(cfg, **fields)
    notes = [
        "# Written by `hptransfer stn`: tuned base hyperparameters at the proxy width.",
        "# lr was not tuned (an STN cannot tune it); it is the lr of the STN run.",
    ]
    if wd_key:
        notes.append(
            f"# weight_decay = the tuned AdamW weight_decay ({wd_key}) at the base width; the rule "
            "scales it with width."
        )
    elif wd is not None:
        notes.append(
            "# weight_decay = 0: the run tuned an L2 coefficient (not an AdamW weight decay) and "
            "trained without AdamW decay; tune weight_decay to carry one."
        )
    other = sorted(k for k in values if k.startswith("weight_decay.") and k != wd_key)
    if other:
        notes.append(f"# also tuned, not carried by suggest (see hyper.json): {', '.join(other)}")
    return "\n".join(notes) + "\n" + cfg.to_toml()


def write_outputs(
    out_dir: str | Path,
    *,
    values: Mapping[str, float],
    sigma: Mapping[str, float],
    trajectory: Mapping[str, Sequence[Any]],
    lr: float,
    width: int,
    name: str,
    log_names: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    base: Any = None,
) -> dict[str, Path]:
    """Write ``hyper.json``, ``proxy.toml`` and ``stn_trajectory.{png,svg}`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["json"] = out / "hyper.json"
    payload = {
        "name": name,
        "values": dict(values),
        "sigma": dict(sigma),
        "lr": lr,
        "width": width,
        **(dict(extra) if extra else {}),
        "trajectory": {k: list(v) for k, v in trajectory.items()},
    }
    files["json"].write_text(json.dumps(payload, indent=1) + "\n")
    files["toml"] = out / "proxy.toml"
    files["toml"].write_text(proxy_toml(values, lr=lr, width=width, name=name, base=base))
    png, svg = plot_trajectory(trajectory, out / "stn_trajectory", log_names, title=name)
    files["png"], files["svg"] = png, svg
    return files
