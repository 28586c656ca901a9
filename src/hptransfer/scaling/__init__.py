"""Width-transfer rules (pure Python; the torch adapter lives in ``torch_adapter``)."""

from hptransfer.scaling.config import ConfigError, ProxyConfig, default_config, load_config
from hptransfer.scaling.plan import GroupHyper, Plan, WidthError, check_width, suggest
from hptransfer.scaling.rules import (
    DEFAULT_RULE,
    RULES,
    WD_EXPONENTS,
    ClassExponents,
    ParamClass,
    ScalingRule,
    get_rule,
)

__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "WD_EXPONENTS",
    "ClassExponents",
    "ConfigError",
    "GroupHyper",
    "ParamClass",
    "Plan",
    "ProxyConfig",
    "ScalingRule",
    "WidthError",
    "check_width",
    "default_config",
    "get_rule",
    "load_config",
    "suggest",
]
