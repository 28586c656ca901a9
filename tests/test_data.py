"""Built-in datasets: no download, deterministic split, small-train option."""

from __future__ import annotations

import pytest
import torch

from hptransfer.data import (
    TASKS,
    CharLM,
    NoisyClassification,
    TeacherRegression,
    get_task,
    load_task,
    stdlib_text,
)


def test_stdlib_text_present():
    text = stdlib_text()
    assert len(text) > 200_000
    assert b"def " in text


def test_charlm_split_deterministic_and_disjoint():
    a, b = CharLM(seq_len=32, seed=0), CharLM(seq_len=32, seed=0)
    assert torch.equal(a.train_tokens, b.train_tokens)
    assert torch.equal(a.val_set()[0], b.val_set()[0])
    c = CharLM(seq_len=32, seed=1)
    assert not torch.equal(a.val_tokens, c.val_tokens)
    # train and val come from different blocks: a long val window never appears in train
    probe = bytes(a.val_tokens[1000:1064].tolist())
    assert probe not in bytes(a.train_tokens.tolist())
    assert int(a.train_tokens.max()) < a.vocab_size


def test_charlm_batches():
    data = CharLM(seq_len=16, train_tokens=1000)
    assert data.train_tokens.numel() == 1000
    x, y = data.batch(8, torch.Generator().manual_seed(3))
    x2, _ = data.batch(8, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(x, x2)
    assert torch.equal(x[:, 1:], y[:, :-1])
    vx, vy = data.val_set()
    assert vx.shape[1] == 16 and torch.equal(vx[:, 1:], vy[:, :-1])
    with pytest.raises(ValueError, match="train_tokens"):
        CharLM(seq_len=16, train_tokens=10)


def test_regression_task():
    a = TeacherRegression(d_in=4, n_train=100, n_val=50, seed=0)
    b = TeacherRegression(d_in=4, n_train=100, n_val=50, seed=0)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert a.train_x.shape == (100, 4) and a.val_x.shape == (50, 4)
    assert not torch.equal(TeacherRegression(d_in=4, seed=1).val_y[:50], a.val_y)
    # the target is learnable: a teacher-free predictor (zero) has loss ≈ 1, noise floor ≈ 0.01
    assert 0.5 < float(a.loss(torch.zeros_like(a.val_y), a.val_y)) < 1.6


def test_load_task():
    assert isinstance(load_task("regression", n_train=10, n_val=10), TeacherRegression)
    with pytest.raises(ValueError, match="unknown task 'imagenet'; choose one of: charlm, regression"):
        load_task("imagenet")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("imagenet")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_builds_data_and_a_model_that_fits_its_loss(name):
    spec = TASKS[name]
    kwargs = {"seq_len": 16, "val_sequences": 4} if name == "charlm" else {}
    data = spec.load(**kwargs)
    overrides = {"seq_len": 16, "depth": 1} if name == "charlm" else {}
    model = spec.build_model(32, **overrides)
    x, y = data.batch(4, torch.Generator().manual_seed(0))
    loss = data.loss(model(x), y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    vx, vy = data.val_set()
    assert vx.shape[0] == vy.shape[0] > 0
    from hptransfer.models import builtin_config

    assert builtin_config(spec.config).base_width > 0  # the config runs on this task start from
    if spec.hypers:  # set up for STN: tensor splits with a test split, a loss name the tuner knows
        assert data.test_set()[0].shape[0] > 0 and data.train_set()[0].shape[0] > 0
        assert data.loss_name in ("cross_entropy", "mse")
        assert all(lo <= init <= hi for _, init, lo, hi in spec.hypers)


def test_small_regression_is_the_stn_variant():
    small, big = load_task("regression-small", seed=3), load_task("regression", seed=3)
    assert small.train_set()[0].shape[0] == 128 and big.train_set()[0].shape[0] == 8192
    assert small.noise == 0.5 and big.noise == 0.1
    assert (small.val_x.shape[0], small.test_x.shape[0]) == (1024, 4096)
    assert big.test_x.shape[0] == 0  # the proxy task has no test split by default


def test_test_split_is_the_tail_of_the_held_out_points():
    a = TeacherRegression(d_in=4, n_train=50, n_val=50, seed=0)
    b = TeacherRegression(d_in=4, n_train=50, n_val=20, n_test=30, seed=0)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.val_x[:20], b.val_x) and torch.equal(a.val_y[20:], b.test_y)
    assert b.test_x.shape == (30, 4)
    with pytest.raises(ValueError, match="n_test >= 0"):
        TeacherRegression(n_test=-1)


def test_noisy_classification():
    a, b = NoisyClassification(seed=0), NoisyClassification(seed=0)
    assert torch.equal(a.train_y, b.train_y) and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(NoisyClassification(seed=1).train_x, a.train_x)
    assert a.train_x.shape == (256, 32) and a.val_x.shape == (1024, 32) and a.test_x.shape == (4096, 32)
    # noisy labels: all classes occur, and the teacher's argmax is far from always right
    assert set(a.test_y.tolist()) == set(range(10))
    logits = torch.zeros(4, 10)
    target = torch.tensor([0, 1, 2, 3])
    assert float(a.loss(logits, target)) == pytest.approx(float(torch.log(torch.tensor(10.0))))
    sharp = torch.nn.functional.one_hot(target, 10).float() * 20
    assert float(a.loss(sharp, target, label_smoothing=0.1)) > float(a.loss(sharp, target)) + 0.5
    with pytest.raises(ValueError, match="classes must be >= 2"):
        NoisyClassification(classes=1)
