"""predict_tensor / predict_volume, with a stand-in recipe so the test does not depend on preprocessing."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from tests.models.conftest import small_model

from covidct.errors import ConfigError, ShapeError
from covidct.models import load_checkpoint, save_checkpoint
from covidct.models.inference import ScanPrediction, predict_tensor, predict_volume

SLICES = 5


class _FakeRecipe:
    """Slice recipe (S, 3, 64, 64) or scan recipe (S, 3, 64, 64) for ai-corona, from a dict."""

    def __init__(self, d: dict) -> None:
        self.d = d

    def prepare_volume(self, volume) -> np.ndarray:
        arr = volume.array[:, :64, :64]
        arr = (arr - arr.min()) / (np.ptp(arr) + 1e-6)
        return np.repeat(arr[:, None], 3, axis=1).astype(np.float32)


def _array_volume(seed: int = 0):
    """Duck-typed volume for the stand-in recipe (only ``.array`` is read)."""
    rng = np.random.default_rng(seed)
    return types.SimpleNamespace(array=rng.normal(-500, 300, (SLICES, 64, 64)).astype(np.float32))


@pytest.fixture
def fake_preprocessing(monkeypatch):
    module = types.ModuleType("covidct.preprocessing")
    module.recipe_from_dict = _FakeRecipe
    monkeypatch.setitem(sys.modules, "covidct.preprocessing", module)


def _volume(seed: int = 0):
    """A covidct Volume (HU), SLICES x 64 x 64; imported lazily so io work in progress breaks nothing else."""
    from covidct.io.volume import Volume, VolumeMetadata

    rng = np.random.default_rng(seed)
    return Volume(
        array=rng.normal(-500, 300, (SLICES, 64, 64)).astype(np.float32),
        spacing=(2.5, 0.8, 0.8),
        is_hu=True,
        meta=VolumeMetadata(source="synthetic"),
    )


def test_predict_tensor_batches_give_same_probs():
    model = small_model("covidnet-ct2-s")
    x = torch.rand(5, 3, 64, 64)
    p1 = predict_tensor(model, x, batch_size=2)
    p2, feats = predict_tensor(model, x, batch_size=5, return_features=True)
    assert p1.shape == (5, 3) and np.allclose(p1.sum(1), 1, atol=1e-5)
    assert np.allclose(p1, p2, atol=1e-5)
    assert feats.shape == (5, model.num_features)


def test_predict_tensor_rejects_bad_batch():
    model = small_model("covidnet-ct2-s")
    with pytest.raises(ConfigError):
        predict_tensor(model, torch.rand(1, 3, 64, 64), batch_size=0)
    with pytest.raises(ShapeError):
        predict_tensor(model, torch.rand(3, 64, 64)[:0], batch_size=1)


def test_predict_volume_slice_model_mean_of_slices(tmp_path, fake_preprocessing):
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe={"name": "fake"})
    pred = predict_volume(path, _array_volume(), batch_size=2)
    assert isinstance(pred, ScanPrediction)
    assert pred.slice_probs.shape == (SLICES, 3)
    assert np.allclose(pred.probs, pred.slice_probs.mean(0))
    assert pred.features.ndim == 1 and pred.class_names == ("Normal", "Pneumonia", "COVID-19")
    assert pred.label in pred.class_names
    worst = predict_volume(load_checkpoint(path), _array_volume(), aggregate="max")
    assert any(np.allclose(worst.probs, row) for row in worst.slice_probs)


def test_predict_volume_scan_model(tmp_path, fake_preprocessing):
    path = save_checkpoint(tmp_path / "a.pt", small_model("ai-corona"), recipe={"name": "fake"})
    pred = predict_volume(path, _array_volume())
    assert pred.slice_probs is None
    assert pred.probs.shape == (3,) and pred.features.shape == (1536,)


def test_predict_volume_unknown_aggregate(tmp_path, fake_preprocessing):
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe={"name": "fake"})
    with pytest.raises(ConfigError, match="aggregate"):
        predict_volume(path, _array_volume(), aggregate="median")


def test_predict_volume_with_the_real_covidnet_ct2_recipe(tmp_path):
    preprocessing = pytest.importorskip("covidct.preprocessing")
    if not hasattr(preprocessing, "get_recipe"):
        pytest.skip("covidct.preprocessing.get_recipe is not there yet")
    recipe = preprocessing.get_recipe("covidnet-ct2", size=64)
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe=recipe.to_dict())
    volume = _volume()
    pred = predict_volume(path, volume)
    assert pred.slice_probs.shape[0] == SLICES and np.isclose(pred.probs.sum(), 1, atol=1e-5)
