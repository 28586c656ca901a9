"""Studies that explain themselves: the rule, base width, base config and search space are
stored as study user attributes (plain JSON, readable in ``optuna-dashboard``).

Opening an existing study under another rule or base width is refused (its trial values are base
hyperparameters in other units) unless ``force=True``.

No torch here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hptransfer import __version__
from hptransfer.scaling import ConfigError, ProxyConfig
from hptransfer.tuning.space import SearchSpace, default_space
from hptransfer.tuning.storage import StorageError, make_storage, mask_url, normalize_url

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = [
    "ATTR_PREFIX",
    "StudyMismatchError",
    "load_study",
    "open_study",
    "study_config",
    "study_info",
    "study_proxy_width",
    "study_space",
]

ATTR_PREFIX = "hptransfer."
_KEYS = ("version", "rule", "wd_exponent", "readout", "base_width", "config", "space", "proxy_width")


class StudyMismatchError(ConfigError):
    """An existing study was created under another rule or base width."""


def _rule_key(config: ProxyConfig) -> dict[str, Any]:
    rule = config.scaling_rule()
    return {"rule": rule.name, "wd_exponent": rule.wd_exponent, "readout": rule.readout}


def study_attrs(
    config: ProxyConfig,
    space: SearchSpace,
    proxy_width: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The user attributes a study gets (all JSON-serialisable)."""
    attrs: dict[str, Any] = {
        "version": __version__,
        **_rule_key(config),
        "base_width": config.base_width,
        "config": config.to_dict(),
        "space": space.to_dict(),
        "proxy_width": proxy_width if proxy_width is not None else config.base_width,
    }
    for k, v in (extra or {}).items():
        attrs[k] = json.loads(json.dumps(v))
    return {ATTR_PREFIX + k: v for k, v in attrs.items()}


def study_info(study: optuna.Study) -> dict[str, Any]:
    """The hptransfer attributes of ``study`` (without the prefix); empty for a foreign study."""
    return {k[len(ATTR_PREFIX) :]: v for k, v in study.user_attrs.items() if k.startswith(ATTR_PREFIX)}


def study_config(study: optuna.Study) -> ProxyConfig:
    """The base config ``study`` was created with.

    Raises:
        ConfigError: the study was not made by hptransfer (no stored config).
    """
    info = study_info(study)
    if "config" not in info:
        raise ConfigError(
            f"study {study.study_name!r} has no hptransfer attributes (was it created with "
            "hptransfer.tuning.open_study or `hptransfer tune`?)"
        )
    return ProxyConfig.from_dict(info["config"], source=f"study {study.study_name!r}")


def study_proxy_width(study: optuna.Study) -> int:
    """The width the study's trials trained at (its base width when none is recorded)."""
    info = study_info(study)
    width = info.get("proxy_width")
    return int(width) if width is not None else study_config(study).base_width


def study_space(study: optuna.Study) -> SearchSpace:
    """The search space stored with ``study``."""
    info = study_info(study)
    if "space" not in info:
        raise ConfigError(f"study {study.study_name!r} has no stored search space")
    return SearchSpace.from_dict(info["space"])


def _describe(info: Mapping[str, Any]) -> str:
    rule = info.get("rule")
    if info.get("wd_exponent") is not None and rule == "custom":
        rule = f"custom (wd exponent {info['wd_exponent']})"
    readout = info.get("readout")
    return (
        f"rule {rule}"
        + (f", readout {readout}" if readout and readout != "lr" else "")
        + (f" at base width {info.get('base_width')}")
    )


def open_study(
    study_name: str,
    config: ProxyConfig,
    *,
    storage: str | BaseStorage | None = None,
    space: SearchSpace | None = None,
    proxy_width: int | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    force: bool = False,
    extra_attrs: Mapping[str, Any] | None = None,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    max_retry: int | None = 2,
) -> optuna.Study:
    """Create ``study_name`` (minimising) in ``storage``, or open it if it exists.

    A new study stores the rule, base width, full base config, search space and proxy width as
    user attributes. An existing one must have been created under the same rule and base width.

    Args:
        study_name: the study's name in the storage.
        config: the base config (its rule and base width define the units of every trial).
        storage: a URL (see :mod:`hptransfer.tuning.storage`), a storage object or ``None``
            (``sqlite:///hptransfer.db``).
        space: base hyperparameter ranges; default :func:`default_space`.
        proxy_width: width the trials train at (recorded; default the base width).
        sampler, pruner: passed to :func:`optuna.create_study` (default TPE, median pruner).
        force: open a study created under another rule/base width anyway (its stored
            attributes stay; each trial records the rule and base width it ran under).
        extra_attrs: more user attributes (e.g. model and task names), prefixed ``hptransfer.``.

    Raises:
        StudyMismatchError: the existing study has another rule or base width, or records
            another ``model``/``task`` in ``extra_attrs`` (and not force).
        StorageError: the storage cannot be opened.

    Example:
        >>> from hptransfer.scaling import default_config
        >>> study = open_study("demo", default_config(), storage="sqlite:///:memory:")
        >>> study.user_attrs["hptransfer.base_width"]
        256
    """
    import optuna

    store = make_storage(
        storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry
    )
    where = storage if not isinstance(storage, str | None) else mask_url(normalize_url(storage))
    space = space or default_space()
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=store,
            sampler=sampler,
            pruner=pruner,
            direction="minimize",
            load_if_exists=True,
        )
    except Exception as exc:  # a DB that answered the handshake but fails on queries
        raise StorageError(f"cannot open study {study_name!r} in {where}: {exc}") from None
    info = _wait_for_units(study)
    wanted = study_attrs(config, space, proxy_width, extra_attrs)
    if not info:
        if study.trials:
            if not force:
                raise StudyMismatchError(
                    f"study {study_name!r} in {where} already has {len(study.trials)} trials but no "
                    "hptransfer attributes (rule, base width), so its values cannot be read as base "
                    "hyperparameters; use a new study name, or --force / force=True to adopt it"
                )
        for key, value in wanted.items():
            study.set_user_attr(key, value)
        return study
    new = {k[len(ATTR_PREFIX) :]: v for k, v in wanted.items()}
    diffs = [k for k in ("rule", "wd_exponent", "readout", "base_width") if info.get(k) != new.get(k)]
    if diffs and not force:
        raise StudyMismatchError(
            f"study {study_name!r} in {where} was created under {_describe(info)}; you asked for "
            f"{_describe(new)}. Its trials are base hyperparameters in those units and would not "
            "carry over: use another study name, or --force / force=True to add trials anyway"
        )
    models = {k: (info[k], new[k]) for k in ("model", "task") if k in info and k in new and info[k] != new[k]}
    if models and not force:
        was = ", ".join(f"{k} {old!r}" for k, (old, _) in models.items())
        now = ", ".join(f"{k} {n!r}" for k, (_, n) in models.items())
        raise StudyMismatchError(
            f"study {study_name!r} in {where} holds trials of {was}; you asked for {now}. Its best "
            "trial is another model's: use another study name, or --force / force=True to add "
            "trials anyway"
        )
    if info.get("space") != new["space"]:
        # A changed range is harmless for the units; record the union so the study still explains
        # itself.
        merged = dict(info.get("space") or {})
        merged.update(new["space"])
        study.set_user_attr(ATTR_PREFIX + "space", merged)
    return study


_UNITS = ("rule", "wd_exponent", "readout", "base_width")


def _wait_for_units(study: optuna.Study, timeout: float = 10.0) -> dict[str, Any]:
    """The study's hptransfer attributes, once its units are all there.

    Optuna writes user attributes one at a time: a worker that opens a new study while another
    is still writing them would see the rule without the base width and refuse the study as
    "created under base width None". Attributes begun but not finished are waited for.
    """
    info = study_info(study)
    deadline = time.monotonic() + timeout
    while info and not all(k in info for k in _UNITS) and time.monotonic() < deadline:
        time.sleep(0.05)
        info = study_info(study)
    return info


def _require_existing_file(url: str) -> None:
    """Reading must not create: a mistyped SQLite or journal path would otherwise become a new,
    empty file and the real study would look lost."""
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix):
            path = Path(url[len(prefix) :])
            if url.startswith("sqlite:") and str(path) in ("", ":memory:"):
                return
            if not path.exists():
                raise StorageError(
                    f"no such file: {path} (from {mask_url(url)}); check the path, "
                    "or run `hptransfer tune` there first"
                )


def load_study(storage: str | BaseStorage | None, study_name: str | None = None) -> optuna.Study:
    """Open an existing study read-mostly (no heartbeat); with ``study_name=None`` the storage
    must hold exactly one study.

    Raises:
        StorageError: the storage cannot be opened.
        ConfigError: no such study (the message lists the studies present).
    """
    import optuna

    if isinstance(storage, str | None):
        _require_existing_file(normalize_url(storage))
    store = make_storage(storage, heartbeat_interval=None)
    where = storage if not isinstance(storage, str | None) else mask_url(normalize_url(storage))
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    except Exception as exc:
        raise StorageError(f"cannot read studies from {where}: {exc}") from None
    if study_name is None:
        if len(names) != 1:
            listing = ", ".join(names) if names else "none"
            raise ConfigError(f"{where} holds {len(names)} studies ({listing}); name one with --study-name")
        study_name = names[0]
    if study_name not in names:
        listing = ", ".join(names) if names else "none"
        raise ConfigError(f"no study named {study_name!r} in {where} (studies there: {listing})")
    return optuna.load_study(study_name=study_name, storage=store)
