"""The proxy training loop."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from hptransfer.models import MLP, builtin_config
from hptransfer.scaling.torch_adapter import ClassificationError
from hptransfer.training import lr_lambda, train_proxy

torch.set_num_threads(1)


def test_regression_loss_decreases():
    res = train_proxy("regression", 64, builtin_config("mlp"), steps=60, seed=0)
    assert not res.diverged
    assert res.steps == 60 and len(res.train_losses) == 60
    assert sum(res.train_losses[-10:]) / 10 < 0.5 * sum(res.train_losses[:5]) / 5
    assert res.val_loss < 0.6


def test_charlm_loss_decreases_and_deterministic():
    cfg = builtin_config("llama")
    kw = dict(steps=25, batch_size=8, model_kwargs={"seq_len": 32, "depth": 1})
    a = train_proxy("charlm", 32, cfg, **kw)
    b = train_proxy("charlm", 32, cfg, **kw)
    assert a.train_losses == b.train_losses and a.val_loss == b.val_loss
    assert a.val_loss < math.log(128) - 1.0


def test_diverged_run_recorded():
    cfg = replace(builtin_config("mlp"), lr=1e6, init_std=10.0, output_init_std=10.0)
    res = train_proxy("regression", 64, cfg, rule="sp", steps=50)
    assert res.diverged
    assert math.isinf(res.val_loss)
    assert res.steps < 50


def test_callback_and_exception_propagates():
    seen = []
    res = train_proxy(
        "regression",
        64,
        builtin_config("mlp"),
        steps=20,
        eval_every=5,
        callback=lambda s, v: seen.append((s, v)),
    )
    assert [s for s, _ in seen] == [5, 10, 15, 20]
    assert seen[-1][1] == res.val_loss

    class Stop(Exception):
        pass

    def stop(step, val):
        raise Stop

    with pytest.raises(Stop):
        train_proxy("regression", 64, builtin_config("mlp"), steps=20, eval_every=5, callback=stop)


def test_factory_and_width_ignoring_factory():
    res = train_proxy("regression", 32, builtin_config("mlp"), steps=5, factory=lambda w: MLP(w, depth=2))
    assert res.model.width == 32
    with pytest.raises(ClassificationError, match="same shapes"):
        train_proxy(
            "regression",
            32,
            builtin_config("mlp"),
            steps=5,
            factory=lambda w: nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 1)),
        )


def test_lr_schedules():
    f = lr_lambda("cosine", 100, warmup=10)
    assert f(0) == pytest.approx(0.1) and f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.0)
    assert lr_lambda("constant", 10)(5) == 1.0
    with pytest.raises(ValueError):
        lr_lambda("step", 10)
