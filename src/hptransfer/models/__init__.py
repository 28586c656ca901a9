"""Width-parametrised reference models: an MLP and a small LLaMA-style decoder.

They are plain ``nn.Module`` s and go through the same torch adapter as user models
(classify against the same model at another width, then init, multipliers, param groups).

Example:
    >>> from hptransfer.models import build_model, builtin_config
    >>> from hptransfer.scaling import suggest
    >>> cfg = builtin_config("llama")
    >>> model = build_model("llama", 128, suggest(cfg, 128))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from hptransfer.models.llama import TinyLlama
from hptransfer.models.mlp import MLP
from hptransfer.scaling import ConfigError, Plan, ProxyConfig

__all__ = [
    "BUILTIN_MODELS",
    "MLP",
    "ModelSpec",
    "TinyLlama",
    "build_model",
    "builtin_config",
    "builtin_task",
    "factory_config",
]


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: its class, the task it trains on (:data:`hptransfer.data.TASKS`), its
    fixed (width-independent) arguments and proxy config."""

    cls: type[nn.Module]
    task: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: ProxyConfig = field(default_factory=ProxyConfig)


_SPECS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(
        MLP,
        "regression",
        {"depth": 3, "d_in": 16, "d_out": 1},
        ProxyConfig(
            name="mlp-64",
            base_width=64,
            head_dim=None,
            lr=2.0**-7,
            weight_decay=0.1,
            init_std=0.125,
            embed_init_std=0.125,
            output_init_std=0.0,
        ),
    ),
    "llama": ModelSpec(
        TinyLlama,
        "charlm",
        {"depth": 2, "head_dim": 16, "vocab_size": 128, "seq_len": 64},
        ProxyConfig(
            name="llama-64",
            base_width=64,
            head_dim=16,
            lr=2.0**-6,
            weight_decay=0.1,
            init_std=0.1,
            embed_init_std=0.1,
            output_init_std=0.0,
        ),
    ),
}

BUILTIN_MODELS: tuple[str, ...] = tuple(_SPECS)


def _spec(name: str) -> ModelSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ConfigError(
            f"unknown built-in model {name!r}; choose one of: {', '.join(BUILTIN_MODELS)}"
        ) from None


def builtin_config(name: str) -> ProxyConfig:
    """A CPU-sized proxy config for a built-in model (base width 64, reasonable base lr/wd)."""
    return _spec(name).config


def builtin_task(name: str) -> str:
    """The task built-in model ``name`` trains on (``llama``: ``charlm``, ``mlp``: ``regression``)."""
    return _spec(name).task


def factory_config(name: str, label: str) -> ProxyConfig:
    """The proxy config for a user's ``MODULE:FACTORY`` trained on built-in model ``name``'s task:
    its base width, lr and weight decay, the factory model's own init kept (no explicit stds),
    and no head layout assumed (set ``head_dim`` or ``n_heads`` in a config file)."""
    return replace(
        _spec(name).config,
        name=label,
        head_dim=None,
        n_heads=None,
        init_std=None,
        embed_init_std=None,
        output_init_std=None,
    )


def build_model(name: str, width: int, plan: Plan | None = None, **overrides: Any) -> nn.Module:
    """Build built-in model ``name`` ("mlp" or "llama") at ``width``.

    The llama gets ``plan.attention_scale`` (muP: ∝ 1/d_head) when a plan is given, else the
    usual 1/sqrt(d_head), and ``plan.residual_multiplier`` on every residual branch (depth rules:
    ``(depth/base_depth)**-alpha``); its number of blocks is ``plan.depth`` unless ``depth`` is
    given. ``overrides`` replace the fixed arguments (depth, seq_len, …).

    Raises:
        ConfigError: a llama ``depth`` other than the depth the plan's depth rule is for, or a
            depth rule for the MLP (it has no residual blocks).
    """
    spec = _spec(name)
    kwargs = {**spec.kwargs, **overrides}
    if (
        spec.cls is not TinyLlama
        and plan is not None
        and plan.depth_rule != "none"
        and plan.depth is not None
    ):
        raise ConfigError(
            f"the built-in {name!r} has no residual blocks, so a depth rule ({plan.depth_rule}) has "
            "nothing to scale: use depth_rule = 'none' with it"
        )
    if spec.cls is TinyLlama and plan is not None:
        kwargs.setdefault("attention_scale", plan.attention_scale)
        kwargs.setdefault("residual_multiplier", plan.residual_multiplier)
        if plan.depth is not None:
            if "depth" not in overrides:
                kwargs["depth"] = plan.depth
            elif plan.depth_rule != "none" and overrides["depth"] != plan.depth:
                raise ConfigError(
                    f"depth={overrides['depth']} but the plan ({plan.depth_rule}) is for depth "
                    f"{plan.depth}: make the plan with suggest(..., depth={overrides['depth']})"
                )
        elif (
            plan.depth_rule != "none"
            and plan.base_depth is not None
            and overrides.get("depth", plan.base_depth) != plan.base_depth
        ):
            # a plan made without a depth holds at the proxy's own depth, not at another one
            raise ConfigError(
                f"depth={overrides['depth']} but the plan holds at the proxy's depth {plan.base_depth} "
                f"({plan.depth_rule}): make the plan with suggest(..., depth={overrides['depth']})"
            )
    return spec.cls(width, **kwargs)
