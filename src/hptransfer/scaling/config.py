"""The proxy configuration: base width, base hyperparameters and the width rule.

A config is a TOML or JSON file with four tables (every key optional, unknown keys refused)::

    [proxy]
    name = "llama-256"
    base_width = 256      # width the base hyperparameters were tuned at
    head_dim = 64         # fixed head size (heads grow with width); or n_heads = 4
    # base_depth = 2      # residual blocks of the proxy (needed to carry to another depth)
    [hyper]
    lr = 0.00390625       # AdamW lr at the base width (vector-like params: lr * vector_lr_mult)
    weight_decay = 0.1    # torch AdamW weight_decay (multiplied by lr in the step)
    vector_lr_mult = 1.0  # lr of vector-like params (embeddings, biases, norm gains) = lr * this
    hidden_lr_mult = 1.0  # lr of hidden matrices = lr * this (e.g. ~10-100 for Muon's matrices)
    eps = 1e-8            # Adam epsilon at the base width
    init_scale = 1.0      # multiplies the init of hidden matrices
    embed_init_scale = 1.0  # multiplies the init of embeddings / input layers
    # init_std = 0.02       # redraw hidden matrices as N(0, init_std²) at the base width
    # embed_init_std = 0.02 # redraw embeddings / input layers as N(0, embed_init_std²)
    # output_init_std = 0.0 # readout init std at the base width (0 = zero init)
    output_mult = 1.0     # readout forward multiplier at the base width
    attn_mult = 1.0       # attention logit multiplier; 1 = 1/sqrt(d_head) at the base width
    [rule]
    name = "mup-wd-linear"  # sp | mup | mup-wd-linear | mup-wd-sqrt | mup-wd-constant | custom
    # wd_exponent = 0.75    # custom weight-decay width exponent
    # readout = "lr"        # "lr" (readout lr/m) or "multiplier" (mup-style output/m)
    # optimizer = "adamw"   # adamw | adam (coupled L2) | sgd | muon (Muon matrices, AdamW rest)
    # muon_adjust_lr_fn = "original"  # torch.optim.Muon adjust_lr_fn: original | match_rms_adamw
    # depth_rule = "none"   # none | depth-mup (alpha 1/2) | completep (alpha 1)
    # scale_eps = false     # scale Adam epsilon per class with width/depth (off: one eps)
    # wd_exponents = {attention = 1.0, mlp = 1.0, output = 1.0}  # per-class wd width exponents
    # wd_length_exponent = 1.0  # wd x (proxy steps / steps)^this; 1: AdamW timescale rule, 0: fixed
    [train]
    # tokens = 2e8          # training tokens of the proxy run
    # batch_tokens = 65536  # tokens per optimizer step of the proxy run (iterations = tokens/this)

``wd_exponents`` are AdamW exponents ``e`` (``wd ~ m**e`` with muP's lr, like ``wd_exponent``)
for hidden attention matrices, hidden MLP matrices and the readout; a key left out takes the
rule's exponent. Under another optimizer or readout style each is shifted as the rule's own.

Init: a key left out (``init_std``, ``embed_init_std``, ``output_init_std``) keeps the model's own
init at the base width and applies only the rule's width correction elsewhere; the scales
multiply whichever init is used.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hptransfer.scaling.rules import (
    DEFAULT_RULE,
    MUON_ADJUST_LR_FNS,
    OPTIMIZERS,
    READOUT_STYLES,
    DepthRule,
    ScalingRule,
    get_depth_rule,
    get_rule,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "ProxyConfig", "default_config", "load_config"]


#: Largest weight-decay width exponent accepted (the named rules use 0, 0.5 and 1).
MAX_WD_EXPONENT = 4.0

#: Classes that ``wd_exponents`` may name: hidden attention matrices, hidden MLP matrices, readout.
WD_EXPONENT_KEYS = ("attention", "mlp", "output")


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class ProxyConfig:
    """Base (proxy-width) hyperparameters and the rule that carries them to other widths."""

    name: str = "proxy"
    base_width: int = 256
    head_dim: int | None = None  # None (and no n_heads): a model without attention
    n_heads: int | None = None
    base_depth: int | None = None  # residual blocks of the proxy; None: depth is not carried
    lr: float = 2.0**-8
    weight_decay: float = 0.1
    vector_lr_mult: float = 1.0
    hidden_lr_mult: float = 1.0
    eps: float = 1e-8
    init_scale: float = 1.0
    embed_init_scale: float = 1.0
    init_std: float | None = None  # None: keep the model's own init (rule-corrected)
    embed_init_std: float | None = None
    output_init_std: float | None = None
    output_mult: float = 1.0
    attn_mult: float = 1.0
    rule: str = DEFAULT_RULE
    wd_exponent: float | None = None
    readout: str = "lr"
    optimizer: str = "adamw"
    muon_adjust_lr_fn: str = "original"
    depth_rule: str = "none"
    scale_eps: bool = False
    wd_exponents: Mapping[str, float] = field(default_factory=dict, hash=False)
    wd_length_exponent: float = 1.0  # wd x (base iterations / iterations) ** this
    tokens: float | None = None  # training tokens of the proxy run
    batch_tokens: float | None = None  # tokens per optimizer step of the proxy run

    def __post_init__(self) -> None:
        for key, attr in (
            ("proxy.name", "name"),
            ("rule.name", "rule"),
            ("rule.readout", "readout"),
            ("rule.optimizer", "optimizer"),
            ("rule.muon_adjust_lr_fn", "muon_adjust_lr_fn"),
            ("rule.depth_rule", "depth_rule"),
        ):
            if not isinstance(getattr(self, attr), str):
                raise ConfigError(f"{key} must be a string, got {getattr(self, attr)!r}")
        _check_int("proxy.base_width", self.base_width, minimum=1)
        if self.base_depth is not None:
            _check_int("proxy.base_depth", self.base_depth, minimum=1)
        if self.head_dim is not None and self.n_heads is not None:
            raise ConfigError(
                "proxy: give head_dim (fixed head size) or n_heads (fixed head count), not both"
            )
        if self.head_dim is not None:
            _check_int("proxy.head_dim", self.head_dim, minimum=1)
        if self.n_heads is not None:
            _check_int("proxy.n_heads", self.n_heads, minimum=1)
        divisor = self.head_dim or self.n_heads
        if divisor and self.base_width % divisor:
            what = "head_dim" if self.head_dim else "n_heads"
            raise ConfigError(f"proxy.base_width={self.base_width} is not divisible by {what}={divisor}")
        for key in (
            "lr",
            "vector_lr_mult",
            "hidden_lr_mult",
            "eps",
            "init_scale",
            "embed_init_scale",
            "output_mult",
            "attn_mult",
        ):
            _check_float(f"hyper.{key}", getattr(self, key), positive=True)
        _check_float("hyper.weight_decay", self.weight_decay, positive=False)
        for key in ("init_std", "embed_init_std", "output_init_std"):
            if getattr(self, key) is not None:
                _check_float(f"hyper.{key}", getattr(self, key), positive=key != "output_init_std")
        if self.readout not in READOUT_STYLES:
            styles = " or ".join(map(repr, READOUT_STYLES))
            raise ConfigError(f"rule.readout must be {styles}, got {self.readout!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"rule.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.muon_adjust_lr_fn not in MUON_ADJUST_LR_FNS:
            raise ConfigError(
                f"rule.muon_adjust_lr_fn must be one of {', '.join(MUON_ADJUST_LR_FNS)}, "
                f"got {self.muon_adjust_lr_fn!r}"
            )
        if not isinstance(self.scale_eps, bool):
            raise ConfigError(f"rule.scale_eps must be true or false, got {self.scale_eps!r}")
        if self.wd_exponent is not None:
            _check_wd_exponent("rule.wd_exponent", self.wd_exponent)
        if not isinstance(self.wd_exponents, Mapping):
            raise ConfigError(
                "rule.wd_exponents must be a table such as {attention = 1.0, mlp = 1.0, output = 1.0}, "
                f"got {self.wd_exponents!r}"
            )
        for key, value in self.wd_exponents.items():
            if key not in WD_EXPONENT_KEYS:
                raise ConfigError(
                    f"rule.wd_exponents: unknown class {key!r}; allowed: {', '.join(WD_EXPONENT_KEYS)}"
                )
            _check_wd_exponent(f"rule.wd_exponents.{key}", value)
        # a private copy, in the order of WD_EXPONENT_KEYS (equal configs print alike)
        object.__setattr__(
            self,
            "wd_exponents",
            {k: float(self.wd_exponents[k]) for k in WD_EXPONENT_KEYS if k in self.wd_exponents},
        )
        _check_wd_exponent("rule.wd_length_exponent", self.wd_length_exponent)
        for key in ("tokens", "batch_tokens"):
            if getattr(self, key) is not None:
                _check_float(f"train.{key}", getattr(self, key), positive=True)
        if (self.tokens is None) != (self.batch_tokens is None):
            raise ConfigError(
                "train: give both tokens (training tokens of the proxy run) and batch_tokens "
                "(tokens per optimizer step), or neither"
            )
        if self.tokens is not None and self.batch_tokens is not None and self.batch_tokens > self.tokens:
            raise ConfigError(
                f"train.batch_tokens={self.batch_tokens:g} is more than train.tokens={self.tokens:g} "
                "(the run would be less than one step)"
            )
        try:
            rule = self.scaling_rule()
            self.depth_scaling_rule()
        except ValueError as exc:
            raise ConfigError(f"rule: {exc}") from None
        if self.wd_exponents and not rule.is_mup:
            raise ConfigError(
                f"rule.wd_exponents needs a muP rule; rule {rule.name!r} scales nothing with width"
            )

    # -- derived ---------------------------------------------------------------------------
    def scaling_rule(self) -> ScalingRule:
        return get_rule(
            self.rule,
            wd_exponent=self.wd_exponent,
            readout=self.readout,  # type: ignore[arg-type]
            optimizer=self.optimizer,  # type: ignore[arg-type]
            muon_adjust_lr_fn=self.muon_adjust_lr_fn,  # type: ignore[arg-type]
        )

    def depth_scaling_rule(self, optimizer: str | None = None) -> DepthRule:
        """The depth rule (``depth_rule``) for ``optimizer`` (default: the config's)."""
        return get_depth_rule(self.depth_rule, optimizer=(optimizer or self.optimizer))  # type: ignore[arg-type]

    @property
    def iterations(self) -> float | None:
        """Optimizer steps of the proxy run, ``tokens / batch_tokens`` (None when not given)."""
        if self.tokens is None or self.batch_tokens is None:
            return None
        return self.tokens / self.batch_tokens

    @property
    def min_width(self) -> int:
        """Smallest width the model allows: one head (or one unit per head)."""
        return self.head_dim or self.n_heads or 1

    def heads_at(self, width: int) -> tuple[int, int] | None:
        """(n_heads, head_dim) at ``width``, or None for a model without attention."""
        if self.head_dim:
            return width // self.head_dim, self.head_dim
        if self.n_heads:
            return self.n_heads, width // self.n_heads
        return None

    def with_rule(self, rule: str, wd_exponent: float | None = None) -> ProxyConfig:
        return replace(self, rule=rule, wd_exponent=wd_exponent)

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        flat = asdict(self)
        out: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
        for section, keys in _SECTIONS.items():
            for file_key, attr in keys.items():
                value = flat[attr]
                if value is None or (attr in _OMIT_AT_DEFAULT and value == _DEFAULTS[attr]):
                    continue
                out[section][file_key] = dict(value) if isinstance(value, Mapping) else value
        return {section: values for section, values in out.items() if values}

    def to_toml(self) -> str:
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> ProxyConfig:
        """Build from the nested ``{proxy: {...}, hyper: {...}, rule: {...}}`` form.

        ``rule`` may also be a plain string (the rule name).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: top level must be a table/object")
        kwargs: dict[str, Any] = {}
        for section, value in data.items():
            if section == "rule" and isinstance(value, str):
                value = {"name": value}
            if section not in _SECTIONS:
                raise ConfigError(
                    f"{source}: unknown section [{section}]; expected one of "
                    + ", ".join(f"[{s}]" for s in _SECTIONS)
                )
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [{section}] must be a table/object")
            keys = _SECTIONS[section]
            for key, item in value.items():
                if key not in keys:
                    raise ConfigError(f"{source}: unknown key {section}.{key}; allowed: " + ", ".join(keys))
                kwargs[keys[key]] = item
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


# file layout: section -> {key in file: dataclass attribute}
_SECTIONS: dict[str, dict[str, str]] = {
    "proxy": {
        "name": "name",
        "base_width": "base_width",
        "head_dim": "head_dim",
        "n_heads": "n_heads",
        "base_depth": "base_depth",
    },
    "hyper": {
        k: k
        for k in (
            "lr",
            "weight_decay",
            "vector_lr_mult",
            "hidden_lr_mult",
            "eps",
            "init_scale",
            "embed_init_scale",
            "init_std",
            "embed_init_std",
            "output_init_std",
            "output_mult",
            "attn_mult",
        )
    },
    "rule": {
        "name": "rule",
        "wd_exponent": "wd_exponent",
        "readout": "readout",
        "optimizer": "optimizer",
        "muon_adjust_lr_fn": "muon_adjust_lr_fn",
        "depth_rule": "depth_rule",
        "scale_eps": "scale_eps",
        "wd_exponents": "wd_exponents",
        "wd_length_exponent": "wd_length_exponent",
    },
    "train": {"tokens": "tokens", "batch_tokens": "batch_tokens"},
}
assert {a for s in _SECTIONS.values() for a in s.values()} == {f.name for f in fields(ProxyConfig)}

# New keys written only when they differ from the default: configs (and study attributes)
# that do not use them serialise exactly as before they existed.
_OMIT_AT_DEFAULT = frozenset(
    {
        "hidden_lr_mult",
        "eps",
        "muon_adjust_lr_fn",
        "depth_rule",
        "scale_eps",
        "wd_exponents",
        "wd_length_exponent",
    }
)
_DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    for f in fields(ProxyConfig)
}


def _check_wd_exponent(key: str, value: Any) -> None:
    _check_float(key, value, positive=False, allow_negative=True)
    if abs(value) > MAX_WD_EXPONENT:
        raise ConfigError(f"{key} must be within ±{MAX_WD_EXPONENT:g} (linear is 1, sqrt 0.5), got {value!r}")


def _check_int(key: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")


def _check_float(key: str, value: Any, *, positive: bool, allow_negative: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")
    if not positive and not allow_negative and value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")


def _toml_value(v: Any) -> str:
    if isinstance(v, str):  # TOML basic string: escape quotes, backslashes, control chars
        body = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in v)
        return f'"{body}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def load_config(path: str | Path) -> ProxyConfig:
    """Read a TOML (``.toml``) or JSON (``.json``) proxy config.

    Raises:
        ConfigError: missing file, syntax error, unknown key or bad value.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(f"config {p} is a directory, not a TOML or JSON file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); save it as UTF-8 TOML or JSON"
        ) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"{p}: not valid {kind}: {exc}") from None
    return ProxyConfig.from_dict(data, source=str(p))


def default_config() -> ProxyConfig:
    """The embedded default proxy: a small LLaMA-style model at width 256 (see
    ``default_proxy.toml`` inside the package)."""
    # A plain path, not importlib.resources: that import alone costs `hptransfer suggest` ~15 ms.
    text = Path(__file__).with_name("default_proxy.toml").read_text("utf-8")
    return ProxyConfig.from_dict(tomllib.loads(text), source="embedded default")
