"""Proxy config: files, round trips, and clear errors on bad input."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hptransfer.scaling import ConfigError, ProxyConfig, default_config, load_config

finite = st.floats(1e-6, 1e3, allow_nan=False, allow_infinity=False)
configs = st.builds(
    ProxyConfig,
    name=st.text(min_size=1, max_size=20),
    base_width=st.sampled_from([32, 64, 96, 256]),
    head_dim=st.sampled_from([None, 16, 32]),
    lr=finite,
    weight_decay=st.floats(0, 10),
    init_std=finite,
    output_init_std=st.floats(0, 1),
    rule=st.sampled_from(["sp", "mup", "mup-wd-sqrt", "mup-wd-linear", "mup-wd-constant"]),
    readout=st.sampled_from(["lr", "multiplier"]),
).filter(lambda c: c.head_dim is None or c.base_width % c.head_dim == 0)


@given(config=configs)
def test_toml_and_json_round_trip(tmp_path_factory: pytest.TempPathFactory, config: ProxyConfig) -> None:
    d = tmp_path_factory.mktemp("cfg")
    (d / "c.toml").write_text(config.to_toml())
    (d / "c.json").write_text(json.dumps(config.to_dict()))
    assert load_config(d / "c.toml") == config
    assert load_config(d / "c.json") == config


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), min_size=1, max_size=3))
def test_unknown_keys_are_refused_with_their_name(extra: dict[str, int]) -> None:
    data = {"proxy": {"base_width": 128, **{f"x_{k}": v for k, v in extra.items()}}}
    with pytest.raises(ConfigError, match=r"unknown key proxy\.x_"):
        ProxyConfig.from_dict(data)


def test_embedded_default_is_the_documented_proxy() -> None:
    cfg = default_config()
    assert (cfg.name, cfg.base_width, cfg.head_dim, cfg.rule) == ("llama-256", 256, 64, "mup-wd-linear")
    # dataclass defaults (which keep the model's own init and have no attention) plus those keys
    assert cfg == ProxyConfig(
        name="llama-256",
        head_dim=64,
        init_std=0.02,
        embed_init_std=0.02,
        output_init_std=0.0,
        base_depth=2,  # the built-in llama's blocks
        depth_rule="completep",
        tokens=2048 * 1000,  # 1000 steps of 32 x 64 tokens
        batch_tokens=2048,
    )


def test_rule_may_be_a_plain_string_and_sections_are_optional() -> None:
    cfg = ProxyConfig.from_dict({"rule": "sqrt", "hyper": {"lr": 0.01}})
    assert cfg.scaling_rule().wd_exponent == 0.5 and cfg.lr == 0.01 and cfg.base_width == 256


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"proxi": {}}, r"unknown section \[proxi\]"),
        ({"hyper": {"lr": 0}}, "hyper.lr must be > 0"),
        ({"hyper": {"lr": "fast"}}, "hyper.lr must be a number"),
        ({"hyper": {"weight_decay": -1}}, "hyper.weight_decay must be >= 0"),
        ({"hyper": {"lr": float("inf")}}, "hyper.lr must be finite"),
        ({"proxy": {"base_width": 0}}, "proxy.base_width must be >= 1"),
        ({"proxy": {"base_width": 12.5}}, "proxy.base_width must be an integer"),
        ({"proxy": {"base_width": 100, "head_dim": 64}}, "not divisible by head_dim=64"),
        ({"proxy": {"head_dim": 16, "n_heads": 4}}, "not both"),
        ({"rule": {"name": "bogus"}}, "unknown rule 'bogus'"),
        ({"rule": {"name": "custom"}}, "needs a wd_exponent"),
        ({"rule": {"readout": "both"}}, "readout must be"),
        ({"hyper": 3}, r"\[hyper\] must be a table"),
        ([1, 2], "top level must be a table"),
    ],
)
def test_bad_values_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProxyConfig.from_dict(data)  # type: ignore[arg-type]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[proxy\nbase_width = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad_json)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[hyper]\nlr = -1\n")
    with pytest.raises(ConfigError, match=r"wrong.toml: hyper.lr must be > 0"):
        load_config(wrong)


def test_custom_exponent_config() -> None:
    cfg = replace(default_config(), rule="custom", wd_exponent=0.75)
    assert cfg.scaling_rule().wd_exponent == 0.75
    # keys a file leaves out take the dataclass defaults (no attention unless head_dim/n_heads)
    assert load_config_from_text("[rule]\nname='custom'\nwd_exponent=0.75\n") == replace(
        cfg,
        name="proxy",
        head_dim=None,
        init_std=None,
        embed_init_std=None,
        output_init_std=None,
        base_depth=None,
        depth_rule="none",
        tokens=None,
        batch_tokens=None,
    )


def load_config_from_text(text: str) -> ProxyConfig:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same fallback as the package
        import tomli as tomllib

    return ProxyConfig.from_dict(tomllib.loads(text))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe[\x00p\x00", "not a UTF-8 text file"),  # UTF-16
        (bytes(range(200, 256)), "not a UTF-8 text file"),  # binary
        (b"[rule]\nname = 5\n", "rule.name must be a string"),
        (b"[rule]\nname = ['a']\n", "rule.name must be a string"),
        (b"[rule]\nname = 'custom'\nwd_exponent = 1e6\n", "within"),
        (b"[hyper]\nlr = nan\n", "finite"),
    ],
)
def test_bad_config_files_are_one_config_error(tmp_path, content: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "proxy.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
