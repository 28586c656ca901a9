"""The muP coordinate check: does the activation scale of each layer stay put as width grows?

As in the muP papers (Tensor Programs V, appendix D): build the model at several widths, take a
few optimiser steps on one fixed batch, and after each step record the mean absolute value of
every module's output (forward hooks). Under a correct parametrisation the curves are flat in
width; under SP with Adam they grow with width after the first update. The slope of
``log mean|activation|`` against ``log width`` per module and step summarises it.

Works on any ``factory(width) -> nn.Module``; with a :class:`~hptransfer.scaling.ProxyConfig`
the models are initialised and optimised by hptransfer's rule (via the torch adapter), without
one they get plain ``torch.optim.AdamW(lr=lr)`` (standard parametrisation).

Example:
    >>> import torch
    >>> from torch import nn
    >>> def factory(w):
    ...     return nn.Sequential(nn.Linear(8, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 1))
    >>> x, y = torch.randn(32, 8), torch.randn(32, 1)
    >>> rep = coord_check(factory, [32, 64, 128], (x, y), nn.functional.mse_loss, lr=1e-2, steps=3)
    >>> sorted(rep.slopes)[:2]
    ['0', '1']
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hptransfer.diagnostics.fit import fit_power_law

__all__ = ["CoordReport", "coord_check"]

OUTPUT = "<output>"


@dataclass
class CoordReport:
    """``data[width][step][module]`` = mean |output| after ``step`` optimiser steps (0 = init)."""

    widths: list[int]
    steps: int
    data: dict[int, list[dict[str, float]]]
    slopes: dict[str, list[float | None]]  # module -> slope vs log width at each step
    tolerance: float
    rule: str | None = None
    problems: list[str] = field(default_factory=list)

    def worst(self, module: str) -> float:
        """Largest |slope| over the steps after the first update (step >= 1)."""
        vals = [abs(s) for s in self.slopes[module][1:] if s is not None]
        return max(vals) if vals else 0.0

    def unstable(self) -> list[str]:
        """Modules whose activation scale moves with width by more than ``tolerance`` in slope."""
        return [m for m in self.slopes if self.worst(m) > self.tolerance]

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": self.widths,
            "steps": self.steps,
            "rule": self.rule,
            "tolerance": self.tolerance,
            "slopes": self.slopes,
            "unstable": self.unstable(),
            "data": {str(w): d for w, d in self.data.items()},
            "problems": self.problems,
        }


def _plain_adamw(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)


def coord_check(
    factory: Callable[[int], nn.Module],
    widths: Sequence[int],
    batch: tuple[Any, Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    steps: int = 4,
    config: Any = None,
    rule: str | None = None,
    lr: float | None = None,
    seeds: int = 1,
    include: str | None = None,
    tolerance: float = 0.25,
) -> CoordReport:
    """Run the coordinate check of ``factory`` at ``widths``.

    Args:
        factory: ``factory(width) -> nn.Module``.
        widths: at least two widths.
        batch: ``(inputs, targets)``; the same batch is used at every step (as in muP's check).
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``.
        steps: optimiser steps; activations are recorded at init and after each step.
        config: a ``ProxyConfig``: models are parametrised by ``suggest(config, width, rule)``
            (init, multipliers, AdamW param groups). Without it: plain AdamW at ``lr``.
        rule: the rule (default: the config's).
        lr: learning rate for the plain-AdamW mode (ignored with ``config``).
        seeds: models per width; the activation scales are averaged.
        include: regex on module names to record (default: every leaf module and the output).
        tolerance: a module whose |slope| exceeds this after any step is listed by ``unstable()``.

    A width at which the factory or the forward pass fails is skipped and named in
    ``problems``.
    """
    if len(widths) < 2:
        raise ValueError("the coordinate check compares widths: give at least two")
    if config is None and lr is None:
        raise ValueError("give a ProxyConfig (hptransfer's rule) or an lr (plain AdamW)")
    pattern = re.compile(include) if include else None
    data: dict[int, list[dict[str, float]]] = {}
    problems: list[str] = []
    x, y = batch
    for width in widths:
        runs: list[list[dict[str, float]]] = []
        try:
            for seed in range(seeds):
                torch.manual_seed(seed)
                model = factory(width)
                opt = _optimizer(factory, model, width, config, rule, lr)
                runs.append(_record(model, opt, x, y, loss_fn, steps, pattern))
        except Exception as exc:  # a user factory/model may fail in any way; keep the others
            problems.append(f"width {width}: {type(exc).__name__}: {exc}")
            continue
        data[width] = [
            {name: sum(r[s][name] for r in runs) / len(runs) for name in runs[0][s]} for s in range(steps + 1)
        ]
    ok = sorted(data)
    modules = list(data[ok[0]][0]) if ok else []
    slopes: dict[str, list[float | None]] = {}
    for name in modules:
        row: list[float | None] = []
        for s in range(steps + 1):
            vals = [data[w][s].get(name, math.nan) for w in ok]
            if len(ok) >= 2 and all(v > 0 and math.isfinite(v) for v in vals):
                row.append(fit_power_law(ok, vals).alpha)
            else:
                row.append(None)
        slopes[name] = row
    if len(ok) < 2:
        problems.append("fewer than two widths ran; no slopes")
    rule_name = None
    if config is not None:
        rule_name = config.with_rule(rule).scaling_rule().name if rule else config.scaling_rule().name
    return CoordReport(
        widths=ok,
        steps=steps,
        data=data,
        slopes=slopes,
        tolerance=tolerance,
        rule=rule_name,
        problems=problems,
    )


def _optimizer(
    factory: Callable[[int], nn.Module],
    model: nn.Module,
    width: int,
    config: Any,
    rule: str | None,
    lr: float | None,
) -> torch.optim.Optimizer:
    if config is None:
        assert lr is not None
        return _plain_adamw(model, lr)
    from hptransfer.scaling import suggest
    from hptransfer.scaling.torch_adapter import adamw, meta_model, parametrize

    plan = suggest(config, width, rule)
    ref_width = config.base_width if config.base_width != width else 2 * width
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the attention-scale reminder; the factory owns it
        table = parametrize(model, plan, meta_model(factory, ref_width))
    return adamw(model, plan, table)


def _record(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: Any,
    y: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    steps: int,
    pattern: re.Pattern[str] | None,
) -> list[dict[str, float]]:
    current: dict[str, float] = {}

    def hook(name: str) -> Callable[..., None]:
        def fn(_mod: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                current[name] = float(out.detach().abs().mean())

        return fn

    handles = [
        mod.register_forward_hook(hook(name))
        for name, mod in model.named_modules()
        if name and not any(True for _ in mod.children()) and (pattern is None or pattern.search(name))
    ]
    history: list[dict[str, float]] = []
    try:
        model.train()
        for step in range(steps + 1):
            current.clear()
            out = model(x)
            if isinstance(out, torch.Tensor):
                current[OUTPUT] = float(out.detach().abs().mean())
            history.append(dict(current))
            if step == steps:
                break
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for h in handles:
            h.remove()
    return history
