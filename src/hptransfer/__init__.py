"""hptransfer: tune hyperparameters on a narrow proxy, carry them to a wide model.

The top-level namespace is torch-free (``hptransfer suggest`` starts fast); torch-facing code
lives in :mod:`hptransfer.scaling.torch_adapter`, :mod:`hptransfer.diagnostics`,
:mod:`hptransfer.stn`, :mod:`hptransfer.tuning` and :mod:`hptransfer.models`.
"""

from hptransfer.scaling import (
    RULES,
    ConfigError,
    ParamClass,
    Plan,
    ProxyConfig,
    ScalingRule,
    WidthError,
    default_config,
    get_rule,
    load_config,
    suggest,
)

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "ConfigError",
    "ParamClass",
    "Plan",
    "ProxyConfig",
    "ScalingRule",
    "WidthError",
    "__version__",
    "default_config",
    "get_rule",
    "load_config",
    "suggest",
]
