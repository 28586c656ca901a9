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


def test_resolve_model_one_rule_for_every_command() -> None:
    """tune, diagnose and sweep resolve --model/--task through one function: a built-in model
    trains on its own task, a factory on any registry task with that task's config."""
    pytest.importorskip("torch")
    from hptransfer.data import TASKS
    from hptransfer.diagnostics.api import resolve_model as diagnose_resolve
    from hptransfer.factories import resolve_model
    from hptransfer.models import builtin_config
    from hptransfer.tuning.builtin import resolve_model as tune_resolve

    assert diagnose_resolve is resolve_model and tune_resolve is resolve_model
    llama = resolve_model("lm")
    assert (llama.name, llama.task, llama.factory, llama.builtin) == ("llama", "charlm", None, "llama")
    assert llama.config == builtin_config("llama")
    assert resolve_model("regression").builtin == "mlp"
    with pytest.raises(ConfigError, match="trains on task 'charlm', not 'regression'"):
        resolve_model("llama", task="regression")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        resolve_model("llama", task="nope")
    with pytest.raises(ConfigError, match="unknown model 'gpt'"):
        resolve_model("gpt")
    choice = resolve_model("hptransfer.models:MLP", task="classify")
    assert choice.builtin is None and choice.task == "classify" and choice.name == "hptransfer.models:MLP"
    assert choice.config.base_width == builtin_config(TASKS["classify"].config).base_width
    assert choice.config.init_std is None  # the factory's own init is kept
