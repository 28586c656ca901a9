"""The glyphs image task and the data-side ``augment`` hyperparameter (STN and fixed runs)."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hptransfer.cli.main import app
from hptransfer.data.images import GlyphCNN, GlyphImages, augment_images
from hptransfer.stn import HyperSpec, StnConfig, StnTuner, TensorBatches, make_task, train_fixed

torch.set_num_threads(1)  # the machine's 2 cores are shared


def test_augment_images_scales_with_strength_per_example() -> None:
    x = GlyphImages(n_train=6, n_val=1, n_test=0).train_set()[0]
    assert augment_images(x, 0.0) is x
    g = torch.Generator().manual_seed(0)
    weak = augment_images(x, 0.05, torch.Generator().manual_seed(0))
    strong = augment_images(x, 1.0, g)
    assert weak.shape == x.shape
    assert (weak - x).abs().mean() < (strong - x).abs().mean()
    # one strength per image: a zero row is (numerically) untouched, a non-zero row is moved
    per = augment_images(x, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    assert torch.allclose(per[0::2], x[0::2], atol=1e-5)
    assert not torch.allclose(per[1::2], x[1::2], atol=1e-2)
    with pytest.raises(ValueError, match="strength"):
        augment_images(x, -0.5)


def test_glyphs_are_generated_from_the_seed() -> None:
    a, b, c = (GlyphImages(n_train=20, n_val=5, n_test=5, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (20, 1, 16, 16) and set(a.train_y.tolist()) <= set(range(10))


def _glyph_run(data: GlyphImages, val: tuple[torch.Tensor, torch.Tensor], steps: int, seed: int) -> StnTuner:
    tuner = StnTuner(
        lambda: GlyphCNN(8),
        [HyperSpec("augment", 0.5, 0.0, 1.5)],
        config=StnConfig(seed=seed, checkpoint_every=0),
        augment=data.augment_with,
    )
    tuner.fit(TensorBatches(*data.train_set(), 32), TensorBatches(*val, 128), steps=steps)
    return tuner


def test_stn_moves_the_augmentation_strength_the_way_the_validation_data_asks() -> None:
    """Known direction: validated on strongly rotated/shifted images, more augmentation helps and
    the STN raises the strength; validated on the training images themselves, augmentation only
    hurts and it lowers it (both from 0.5)."""
    data = GlyphImages(n_train=128, n_val=256, n_test=0, seed=0, variation=0.3)
    vx, vy = data.val_set()
    shifted = augment_images(vx, 1.5, torch.Generator().manual_seed(0))
    up = _glyph_run(data, (shifted, vy), steps=200, seed=0).values()["augment"]
    down = _glyph_run(data, data.train_set(), steps=200, seed=0).values()["augment"]
    assert up > 0.7, up
    assert down < 0.4, down


def test_training_with_augmentation_is_bit_reproducible_by_seed() -> None:
    data = GlyphImages(n_train=64, n_val=64, n_test=0, seed=3)
    runs = [_glyph_run(data, data.val_set(), steps=40, seed=s) for s in (5, 5, 6)]
    a, b, c = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].trajectory == runs[1].trajectory
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # fixed-value runs (what Optuna and the benchmark train) apply the same augmentation
    task = make_task("glyphs", seed=0, n_train=64, n_val=64, n_test=64)
    one, two = (train_fixed(task, {"augment": 0.8}, epochs=2, seed=1) for _ in range(2))
    none = train_fixed(task, {"augment": 0.0}, epochs=2, seed=1)
    assert one == two
    assert one["train_loss"] != none["train_loss"]


def test_augment_without_an_augmentation_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"StnTuner\(augment=fn\)"):
        StnTuner(lambda: GlyphCNN(4), [HyperSpec("augment", 0.5, 0.0, 1.5)])
    task = make_task("classify", seed=0, n_train=32)
    with pytest.raises(ValueError, match="no augmentation"):
        train_fixed(task, {"augment": 0.5}, epochs=1)


def test_cli_tunes_the_augmentation_of_the_glyphs_task(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["stn", "--task", "glyphs", "--epochs", "2", "--out", str(tmp_path / "run"), "--json"]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert set(payload["values"]) == {"dropout", "l2", "augment"}
    assert 0.0 < payload["values"]["augment"] < 1.5
