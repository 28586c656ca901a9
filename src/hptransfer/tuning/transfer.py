"""From a finished proxy study to hyperparameters at the target width.

``best_plan(study, width)`` takes the best trial's base hyperparameters (or, with ``top_k > 1``,
the per-parameter median of the ``top_k`` best, in log space: robust to one lucky trial) and carries
them to ``width`` with the study's own rule and base width. ``config_from_study(url, name)`` gives
the same as a :class:`~hptransfer.scaling.ProxyConfig` (what ``hptransfer suggest --study`` uses).

No torch here.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hptransfer.scaling import ConfigError, ParamClass, Plan, ProxyConfig, ScalingRule, suggest
from hptransfer.tuning.space import TUNABLE
from hptransfer.tuning.study import load_study, study_config

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = [
    "EmptyStudyError",
    "best_config",
    "best_plan",
    "config_from_study",
    "ranked_trials",
    "rebase_weight_decay",
]


class EmptyStudyError(ConfigError):
    """A study without a single finished trial to carry over."""


def ranked_trials(study: optuna.Study, config: ProxyConfig | None = None) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials with a finite value, best first, that ran under ``config``'s rule and base
    width (trials added with ``force`` under other units are left out)."""
    from optuna.trial import TrialState

    cfg = config or study_config(study)
    rule = cfg.scaling_rule()
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.value is None or not math.isfinite(t.value):
            continue
        run = t.user_attrs.get("hptransfer.run")
        if isinstance(run, dict) and (
            run.get("rule") != rule.name
            or run.get("base_width") != cfg.base_width
            or run.get("wd_exponent") != rule.wd_exponent
        ):
            continue
        out.append(t)
    out.sort(key=lambda t: math.inf if t.value is None else t.value)
    return out


def best_config(study: optuna.Study, top_k: int = 1) -> ProxyConfig:
    """The study's base config with the best trial's base hyperparameters (``top_k > 1``: the
    per-parameter median in log space of the ``top_k`` best trials).

    Raises:
        EmptyStudyError: no COMPLETE trial with a finite value (the message counts the others).
        ConfigError: the study was not made by hptransfer, or ``top_k < 1``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    cfg = study_config(study)
    trials = ranked_trials(study, cfg)
    if not trials:
        all_trials = study.get_trials(deepcopy=False)
        states = Counter(t.state.name for t in all_trials)
        seen = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials at all"
        errors = [t.user_attrs["hptransfer.error"] for t in all_trials if "hptransfer.error" in t.user_attrs]
        cause = f"; trial failures: {errors[-1]}" if errors else ""
        hint = "fix that and run it again" if errors else "run `hptransfer tune` (or study.optimize) first"
        raise EmptyStudyError(
            f"study {study.study_name!r} has no finished trial to carry over ({seen}{cause}); {hint}"
        )
    top = trials[:top_k]
    names = [n for n in TUNABLE if any(n in t.params for t in top)]
    params: dict[str, Any] = {}  # ProxyConfig fields (all floats; Any for dataclasses.replace)
    for name in names:
        values = [float(t.params[name]) for t in top if name in t.params]
        if all(v > 0 for v in values):
            params[name] = math.exp(statistics.median(math.log(v) for v in values))
        else:
            params[name] = statistics.median(values)
    return replace(cfg, **params)


def best_plan(study: optuna.Study, width: int, top_k: int = 1, rule: ScalingRule | str | None = None) -> Plan:
    """The best trial's (or the top-``k`` median's) base hyperparameters carried to ``width``.

    Args:
        study: a study made by :func:`~hptransfer.tuning.open_study` or ``hptransfer tune``.
        width: the target width.
        top_k: 1 for the best trial; more for the per-parameter log-space median of the best k.
        rule: override the study's rule (rarely right: the trials were tuned under it).

    Example:
        >>> plan = best_plan(study, 4096)          # doctest: +SKIP
        >>> plan["hidden"].lr, plan["hidden"].weight_decay   # doctest: +SKIP
    """
    return suggest(best_config(study, top_k), width, rule)


def config_from_study(
    storage_url: str | BaseStorage | None, study_name: str | None = None, top_k: int = 1
) -> ProxyConfig:
    """The tuned base config stored in a study: what ``hptransfer suggest --study URL
    --study-name NAME`` feeds to :func:`~hptransfer.scaling.suggest`.

    ``study_name=None`` works when the storage holds exactly one study.

    Raises:
        StorageError: the storage cannot be opened (URL shown with the password masked).
        EmptyStudyError: the study has no finished trial.
        ConfigError: no such study, or a study not made by hptransfer.

    Example:
        >>> cfg = config_from_study("sqlite:///hptransfer.db", "llama-proxy")  # doctest: +SKIP
        >>> suggest(cfg, 4096)                                                  # doctest: +SKIP
    """
    return best_config(load_study(storage_url, study_name), top_k)


def rebase_weight_decay(config: ProxyConfig, proxy_width: int, rule: ScalingRule | str) -> ProxyConfig:
    """``config`` with its base weight decay re-expressed for ``rule``, so that at ``proxy_width``
    the hidden matrices get under ``rule`` the weight decay they trained with under the config's
    own rule.

    A study's trials train at the proxy width; their base values are that width's values written
    in the study rule's base units. To ask "what if the weight decay followed another width rule",
    carry the proxy's actual weight decay from the proxy width, not the base value from the base
    width (the two differ by ``(proxy_width / base_width) ** (e_study - e_other)``).

    Example:
        >>> from hptransfer.scaling import default_config, suggest
        >>> cfg = default_config()                     # base width 256, wd 0.1, rule linear
        >>> suggest(cfg, 128)["hidden"].weight_decay   # what a proxy at width 128 trained with
        0.05
        >>> other = rebase_weight_decay(cfg, 128, "mup-wd-sqrt")
        >>> round(suggest(other, 128, "mup-wd-sqrt")["hidden"].weight_decay, 12)
        0.05
    """
    trained = suggest(config, proxy_width)[ParamClass.HIDDEN].weight_decay
    other = suggest(config, proxy_width, rule)[ParamClass.HIDDEN].weight_decay
    if trained == 0 or other == 0:
        return config
    return replace(config, weight_decay=config.weight_decay * trained / other)
