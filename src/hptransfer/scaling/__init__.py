"""Transfer rules for width, depth, optimizer and run length (pure Python; the torch adapter
lives in ``torch_adapter``)."""

from hptransfer.scaling.config import ConfigError, ProxyConfig, default_config, load_config
from hptransfer.scaling.plan import (
    KINDS,
    GroupHyper,
    Plan,
    WidthError,
    check_depth,
    check_tokens,
    check_width,
    parse_count,
    suggest,
)
from hptransfer.scaling.rules import (
    DEFAULT_RULE,
    DEPTH_CLASSES,
    DEPTH_RULES,
    MUON_ADJUST_LR_FNS,
    OPTIMIZERS,
    RULES,
    WD_EXPONENTS,
    ClassExponents,
    DepthRule,
    ParamClass,
    ScalingRule,
    get_depth_rule,
    get_rule,
)

__all__ = [
    "DEFAULT_RULE",
    "DEPTH_CLASSES",
    "DEPTH_RULES",
    "KINDS",
    "MUON_ADJUST_LR_FNS",
    "OPTIMIZERS",
    "RULES",
    "WD_EXPONENTS",
    "ClassExponents",
    "ConfigError",
    "DepthRule",
    "GroupHyper",
    "ParamClass",
    "Plan",
    "ProxyConfig",
    "ScalingRule",
    "WidthError",
    "check_depth",
    "check_tokens",
    "check_width",
    "default_config",
    "get_depth_rule",
    "get_rule",
    "load_config",
    "parse_count",
    "suggest",
]
