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
    rule=st.sampled_from(["mup", "mup-wd-sqrt", "mup-wd-linear", "mup-wd-constant"]),
    readout=st.sampled_from(["lr", "multiplier"]),
    base_depth=st.none() | st.integers(1, 96),
    depth_rule=st.sampled_from(["none", "depth-mup", "completep"]),
    optimizer=st.sampled_from(["adamw", "adam", "sgd", "muon"]),
    muon_adjust_lr_fn=st.sampled_from(["original", "match_rms_adamw"]),
    hidden_lr_mult=finite,
    eps=st.floats(1e-20, 1e-3),
    scale_eps=st.booleans(),
    wd_exponents=st.dictionaries(st.sampled_from(["attention", "mlp", "output"]), st.floats(-4, 4)),
    wd_length_exponent=st.floats(-4, 4),
    tokens=st.floats(1e6, 1e13),
    batch_tokens=st.just(65536.0),
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


def test_new_keys_are_written_only_when_set() -> None:
    """Configs that do not use depth, Muon, eps or per-class exponents serialise as before (study
    attributes and files stay the same); one that does round-trips them."""
    plain = ProxyConfig()
    assert "train" not in plain.to_dict()
    for key in ("depth_rule", "scale_eps", "wd_exponents", "muon_adjust_lr_fn"):
        assert key not in plain.to_dict()["rule"]
    assert "eps" not in plain.to_dict()["hyper"] and "hidden_lr_mult" not in plain.to_dict()["hyper"]
    full = replace(
        plain,
        base_depth=12,
        depth_rule="completep",
        eps=1e-12,
        scale_eps=True,
        wd_exponents={"mlp": 0.8, "attention": 1.0},
        tokens=2e9,
        batch_tokens=2**20,
        optimizer="muon",
        hidden_lr_mult=20.0,
    )
    text = full.to_toml()
    assert "wd_exponents = {attention = 1.0, mlp = 0.8}" in text
    assert load_config_from_text(text) == full
    assert full.iterations == pytest.approx(2e9 / 2**20)


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
        ({"proxy": {"base_depth": 0}}, "proxy.base_depth must be >= 1"),
        ({"proxy": {"base_depth": 2.5}}, "proxy.base_depth must be an integer"),
        ({"hyper": {"eps": 0}}, "hyper.eps must be > 0"),
        ({"hyper": {"hidden_lr_mult": -1}}, "hyper.hidden_lr_mult must be > 0"),
        ({"rule": {"depth_rule": "deep"}}, "unknown depth rule 'deep'"),
        ({"rule": {"optimizer": "lion"}}, "rule.optimizer must be one of"),
        ({"rule": {"muon_adjust_lr_fn": "rms"}}, "rule.muon_adjust_lr_fn must be one of"),
        ({"rule": {"scale_eps": "yes"}}, "rule.scale_eps must be true or false"),
        ({"rule": {"wd_exponents": 1.0}}, "rule.wd_exponents must be a table"),
        ({"rule": {"wd_exponents": {"qkv": 1.0}}}, "unknown class 'qkv'"),
        ({"rule": {"wd_exponents": {"mlp": "x"}}}, "rule.wd_exponents.mlp must be a number"),
        ({"rule": {"name": "sp", "wd_exponents": {"mlp": 1.0}}}, "needs a muP rule"),
        ({"train": {"tokens": 1e9}}, "give both tokens"),
        ({"train": {"tokens": 1e9, "batch_tokens": 0}}, "train.batch_tokens must be > 0"),
        ({"train": {"tokens": 1e3, "batch_tokens": 1e6}}, "less than one step"),
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
