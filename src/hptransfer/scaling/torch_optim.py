"""One optimizer object for Muon on hidden matrices and AdamW on everything else.

``torch.optim.Muon`` only takes 2-D parameters; embeddings, norm gains, biases and the readout
are meant for AdamW. Two optimizers side by side break what users rely on: one LR scheduler,
one ``zero_grad``/``step``, one ``state_dict`` to checkpoint. :class:`MuonAdamW` is a
``torch.optim.Optimizer`` whose param groups are the union of the two: each group carries
``use_muon`` (as in Keller Jordan's ``MuonWithAuxAdam``) and is *the same dict* inside the inner
``torch.optim.Muon`` or ``torch.optim.AdamW`` that steps it, so a scheduler writing
``group["lr"]`` reaches the optimizer that uses it. The state is one dict shared by all three,
so ``state_dict``/``load_state_dict`` save and resume both halves (bit for bit).

Unlike Keller Jordan's and Moonlight's optimizers, which re-implement both updates, this one
delegates to torch's own ``Muon`` and ``AdamW`` (their numerics, ``foreach``/``fused`` kernels
and future fixes), and only routes groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

__all__ = ["MUON_KEYS", "MuonAdamW"]

#: Keys a Muon group reads (``eps`` there is Muon's Newton–Schulz stabiliser, not Adam's).
MUON_KEYS = ("momentum", "nesterov", "ns_coefficients", "ns_steps", "eps", "adjust_lr_fn")


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` over the groups with ``use_muon=True``, ``torch.optim.AdamW`` over
    the others, as one optimizer.

    Args:
        params: param groups (dicts); ``use_muon`` (default False) picks the optimizer. Muon
            groups must hold 2-D parameters only and read Muon's keys (``momentum``,
            ``nesterov``, ``ns_steps``, ``ns_coefficients``, ``adjust_lr_fn``, and ``eps`` as
            Muon's Newton–Schulz epsilon); AdamW groups read AdamW's (``betas``, ``eps``,
            ``amsgrad``…). Both read ``lr`` and ``weight_decay`` (decoupled: ``p <- p -
            lr*wd*p`` in both).
        lr, weight_decay: defaults for groups that do not set them.
        betas, eps, amsgrad, foreach, fused: AdamW's, for the AdamW groups.
        momentum, nesterov, ns_coefficients, ns_steps, adjust_lr_fn: Muon's, for the Muon
            groups; ``muon_eps`` is Muon's ``eps``.

    Schedulers: ``LambdaLR`` and other multiplicative schedulers scale every group.
    ``OneCycleLR``/``CyclicLR`` with ``cycle_momentum=True`` (their default) cycle Muon's
    ``momentum`` (this optimizer's ``defaults`` name ``momentum``, not ``betas``); AdamW's betas
    stay as set (pass ``cycle_momentum=False`` to leave both alone).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8))
        >>> opt = MuonAdamW([
        ...     {"params": [model[1].weight], "use_muon": True, "lr": 0.02},
        ...     {"params": [model[0].weight, model[0].bias, model[1].bias], "lr": 1e-3},
        ... ])
        >>> [type(o).__name__ for o in opt.optimizers]
        ['Muon', 'AdamW']
    """

    def __init__(
        self,
        params: Iterable[Mapping[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        amsgrad: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        ns_steps: int = 5,
        muon_eps: float = 1e-7,
        adjust_lr_fn: str | None = "original",
    ) -> None:
        self._adamw_defaults: dict[str, Any] = {
            "lr": lr,
            "weight_decay": weight_decay,
            "betas": betas,
            "eps": eps,
            "amsgrad": amsgrad,
            "foreach": foreach,
            "fused": fused,
        }
        self._muon_defaults: dict[str, Any] = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "ns_steps": ns_steps,
            "eps": muon_eps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        self._inner: dict[bool, torch.optim.Optimizer] = {}
        given = list(params)
        if not given:
            raise ValueError("optimizer got an empty parameter list")
        if not all(isinstance(g, Mapping) and "params" in g for g in given):
            raise TypeError("MuonAdamW takes param groups: dicts with 'params' and 'use_muon'")
        groups = [dict(g) for g in given]
        # `momentum` (not `betas`) in the defaults: one-cycle schedulers cycle Muon's momentum.
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})
        self._link()

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The inner optimizers (``Muon`` first, then ``AdamW``; only those with groups)."""
        return [self._inner[k] for k in (True, False) if k in self._inner]

    @property
    def muon(self) -> torch.optim.Optimizer | None:
        return self._inner.get(True)

    @property
    def adamw(self) -> torch.optim.Optimizer | None:
        return self._inner.get(False)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        use_muon = bool(param_group.get("use_muon", False))
        param_group["use_muon"] = use_muon
        params = param_group["params"]
        tensors = [params] if isinstance(params, torch.Tensor) else list(params)
        if use_muon:
            for p in tensors:
                shape = tuple((p[1] if isinstance(p, tuple) else p).shape)
                if len(shape) != 2:
                    raise ValueError(
                        f"Muon takes 2-D parameters only, got one of shape {shape} in a use_muon "
                        "group: put it in an AdamW group (use_muon=False)"
                    )
        param_group["params"] = tensors
        # Outer checks (no parameter twice across all groups), then the same dict goes to the
        # inner optimizer, which fills in its own defaults.
        super().add_param_group(param_group)
        if not use_muon:
            param_group.pop("momentum", None)  # the outer default: AdamW has none
        inner = self._inner.get(use_muon)
        if inner is None:
            cls = torch.optim.Muon if use_muon else torch.optim.AdamW
            defaults = self._muon_defaults if use_muon else self._adamw_defaults
            self._inner[use_muon] = cls([param_group], **defaults)
        else:
            inner.add_param_group(param_group)
        if hasattr(self, "state"):
            self._link()

    def _link(self) -> None:
        """Inner optimizers see this optimizer's groups (the same dicts) and its state."""
        for use_muon, inner in self._inner.items():
            inner.param_groups = [g for g in self.param_groups if g["use_muon"] is use_muon]
            inner.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict`` of a :class:`MuonAdamW` built over the same groups."""
        saved = state_dict.get("param_groups", [])
        mine = [g["use_muon"] for g in self.param_groups]
        theirs = [bool(g.get("use_muon", False)) for g in saved]
        if len(saved) == len(mine) and mine != theirs:
            raise ValueError(
                "the saved optimizer sends other groups to Muon than this one; build it from the "
                "same model, plan and groups"
            )
        super().load_state_dict(state_dict)
        self._link()

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step of every inner optimizer; ``closure`` re-evaluates the loss once."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in self.optimizers:
            inner.step()
        return loss

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{type(o).__name__}: {sum(len(g['params']) for g in o.param_groups)} params in "
            f"{len(o.param_groups)} groups"
            for o in self.optimizers
        )
        return f"MuonAdamW({counts})"
