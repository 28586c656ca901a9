"""Built-in datasets: no download, deterministic split, small-train option."""

from __future__ import annotations

import pytest
import torch

from hptransfer.data import CharLM, TeacherRegression, load_task, stdlib_text


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
    with pytest.raises(ValueError, match="unknown task"):
        load_task("imagenet")
