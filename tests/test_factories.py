"""`MODULE:FACTORY` specs: what loads, and one clear ConfigError for everything that does not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hptransfer.factories import load_factory
from hptransfer.models import MLP
from hptransfer.scaling import ConfigError


def test_loads_a_callable() -> None:
    assert load_factory("hptransfer.models:MLP") is MLP


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        (None, "no_colon", "expected MODULE:FACTORY"),
        (None, ":make", "expected MODULE:FACTORY"),
        (None, "no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
        ("def make(width):\n    return width\n", "{mod}:other", "has no attribute 'other'"),
        ("make = 3\n", "{mod}:make", "'make' is not callable"),
        ("def make(width:\n", "{mod}:make", "syntax error in"),
        ("raise RuntimeError('no GPU here')\n", "{mod}:make", "raised RuntimeError: no GPU here"),
        ("import no_such_dependency_xyz\n", "{mod}:make", "No module named 'no_such_dependency_xyz'"),
    ],
)
def test_bad_specs_are_one_config_error(
    source: str | None, spec: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = f"user_models_{abs(hash((source, spec))) % 10**8}"
    if source is not None:
        (tmp_path / f"{mod}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="--model") as err:
        load_factory(spec.format(mod=mod))
    assert message in str(err.value) and "\n" not in str(err.value)
    sys.modules.pop(mod, None)
