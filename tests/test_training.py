"""The proxy training loop."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from hptransfer.data import NoisyClassification, TeacherRegression
from hptransfer.models import MLP, builtin_config
from hptransfer.scaling.torch_adapter import ClassificationError
from hptransfer.training import epoch_steps, evaluate, lr_lambda, train, train_proxy

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


class _Recorder(nn.Module):
    """A linear model that records the inputs of every training forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.lin(x)


def _indexed(n: int) -> TeacherRegression:
    data = TeacherRegression(d_in=1, n_train=n, n_val=4)
    data.train_x = torch.arange(n, dtype=torch.float32)[:, None]  # each example is its own index
    return data


def test_epochs_visit_every_example_once_per_pass():
    data, bs = _indexed(10), 4
    assert epoch_steps(data, bs) == 3  # 4 + 4 + 2
    model = _Recorder()
    res = train(
        model, None, None, data, steps=2 * epoch_steps(data, bs), batch_size=bs, lr=1e-3, shuffle=True
    )
    assert res.steps == 6 and [len(x) for x in model.seen] == [4, 4, 2, 4, 4, 2]
    first = torch.cat(model.seen[:3]).flatten().long()
    second = torch.cat(model.seen[3:]).flatten().long()
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)  # a fresh permutation each pass
    # random batches (the default) draw with replacement: some example repeats within 10 draws
    rand = _Recorder()
    train(rand, None, None, data, steps=5, batch_size=4, lr=1e-3)
    assert len(set(torch.cat(rand.seen).flatten().tolist())) < 20


def test_epochs_need_a_training_split():
    class Stream:
        def batch(self, batch_size, generator):
            return torch.zeros(batch_size, 1), torch.zeros(batch_size, 1)

        def val_set(self):
            return torch.zeros(2, 1), torch.zeros(2, 1)

        @staticmethod
        def loss(out, y):
            return ((out - y) ** 2).mean()

    with pytest.raises(ValueError, match="no 'train' split"):
        train(nn.Linear(1, 1), None, None, Stream(), steps=2, lr=1e-3, shuffle=True)
    with pytest.raises(ValueError, match="no 'test' split"):
        evaluate(nn.Linear(1, 1), Stream(), split="test")


def test_seed_none_follows_the_global_generator():
    data = NoisyClassification(n_train=40, n_val=20, n_test=20)

    def run(global_seed: int) -> list[float]:
        torch.manual_seed(global_seed)
        model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10))
        res = train(model, None, None, data, steps=6, batch_size=8, lr=1e-2, seed=None, shuffle=True)
        return res.train_losses

    assert run(1) == run(1) and run(1) != run(2)


def test_regularizers_applied():
    data = NoisyClassification(n_train=64, n_val=32, n_test=32)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.0), nn.Linear(16, 10))
    before, before0 = model[3].weight.detach().clone(), model[0].weight.detach().clone()
    values = {"dropout": 0.4, "weight_decay.3": 50.0, "l2": 1e-3, "label_smoothing": 0.1}
    res = train(model, None, None, data, steps=4, batch_size=16, lr=1e-3, regularizers=values)
    assert model[2].p == 0.4  # dropout rate set on the module
    # only layer 3 decays, strongly: its weights shrink by (1 - lr*wd)^4 on top of the Adam steps
    assert model[3].weight.norm() < 0.9 * before.norm()
    assert model[0].weight.norm() > 0.97 * before0.norm()  # layer 0 barely moves: no decay there
    assert not res.diverged
    with pytest.raises(ValueError, match="unknown regularisation hyperparameter 'dropuot'"):
        train(model, None, None, data, steps=1, lr=1e-3, regularizers={"dropuot": 0.1})
    with pytest.raises(ValueError, match="names no module"):
        train(model, None, None, data, steps=1, lr=1e-3, regularizers={"dropout.head": 0.1})
    with pytest.raises(ValueError, match="label_smoothing needs a classification loss"):
        reg = TeacherRegression(d_in=32, n_train=8, n_val=4)
        train(model, None, None, reg, steps=1, lr=1e-3, regularizers={"label_smoothing": 0.1})
    with pytest.raises(ValueError, match="needs plan and table, an optimizer, or lr"):
        train(model, None, None, data, steps=1)


def test_input_noise_and_mask_change_the_inputs():
    data = TeacherRegression(d_in=5, n_train=8, n_val=4)
    data.train_x = torch.ones(8, 5)
    model = _Recorder()
    model.lin = nn.Linear(5, 1)
    train(model, None, None, data, steps=2, batch_size=8, lr=1e-3, regularizers={"input_mask": 2})
    assert all(int((x == 0).sum(dim=1).eq(2).sum()) == 8 for x in model.seen)  # two zeros per example
    model.seen.clear()
    train(model, None, None, data, steps=1, batch_size=8, lr=1e-3, regularizers={"input_noise": 0.5})
    assert 0.3 < float((model.seen[0] - 1).std()) < 0.7


def test_small_tasks_train_through_the_proxy_path():
    res = train_proxy("classify", 32, builtin_config("mlp"), steps=30, data_kwargs={"n_train": 64})
    assert type(res.model).__name__ == "DropoutMLP" and res.model.width == 32
    assert not res.diverged and res.train_losses[-1] < res.train_losses[0]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        train_proxy("nope", 32, builtin_config("mlp"), steps=1)


def test_dataset_augment_applies_to_every_training_batch_in_both_modes():
    class Flipped(TeacherRegression):
        calls = 0

        def augment(self, x, y, generator):
            Flipped.calls += 1
            return -x, y  # a visible, deterministic augmentation

    data = Flipped(d_in=1, n_train=6, n_val=4)
    data.train_x = torch.arange(1, 7, dtype=torch.float32)[:, None]
    for shuffle in (False, True):
        model = _Recorder()
        train(model, None, None, data, steps=3, batch_size=2, lr=1e-3, shuffle=shuffle)
        assert all(bool((x < 0).all()) for x in model.seen)
    assert Flipped.calls == 6
