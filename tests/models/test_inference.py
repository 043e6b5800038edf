"""predict_tensor / predict_volume (the one inference path) on real recipes and small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.models.conftest import small_model

from covidct.errors import ConfigError, ShapeError
from covidct.io.volume import Volume, VolumeMetadata
from covidct.models import load_checkpoint, save_checkpoint
from covidct.models.inference import ScanPrediction, aggregate_slices, predict_tensor, predict_volume
from covidct.preprocessing import get_recipe

SLICES = 5
CT2_RECIPE = get_recipe("covidnet-ct2", size=64, box_mode="none").to_dict()
AI_CORONA_RECIPE = get_recipe("ai-corona", size=64).to_dict()


def _volume(seed: int = 0) -> Volume:
    """A random HU volume, SLICES x 64 x 64."""
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


def test_max_aggregation_picks_the_most_abnormal_slice():
    slice_probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1], [0.5, 0.25, 0.25]])
    assert np.array_equal(aggregate_slices(slice_probs, "max"), slice_probs[1])  # lowest Normal
    assert np.allclose(aggregate_slices(slice_probs, "mean"), slice_probs.mean(0))
    with pytest.raises(ConfigError, match="aggregate"):
        aggregate_slices(slice_probs, "median")


def test_predict_volume_slice_model_mean_of_slices(tmp_path):
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe=CT2_RECIPE)
    timings: dict[str, float] = {}
    pred = predict_volume(path, _volume(), batch_size=2, timings=timings)
    assert isinstance(pred, ScanPrediction)
    assert pred.slice_probs.shape == (SLICES, 3)
    assert np.allclose(pred.probs, pred.slice_probs.mean(0))
    assert pred.features.ndim == 1 and pred.class_names == ("Normal", "Pneumonia", "COVID-19")
    assert pred.label in pred.class_names
    assert pred.prepared.array.shape == (SLICES, 3, 64, 64) and set(timings) == {"preprocess", "model"}
    worst = predict_volume(load_checkpoint(path), _volume(), aggregate="max")
    most_abnormal = int(np.argmin(worst.slice_probs[:, 0]))
    assert np.array_equal(worst.probs, worst.slice_probs[most_abnormal])
    again = predict_volume(load_checkpoint(path), _volume(), prepared=pred.prepared)
    assert np.allclose(again.probs, pred.probs, atol=1e-6)


def test_predict_volume_scan_model(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", small_model("ai-corona"), recipe=AI_CORONA_RECIPE)
    pred = predict_volume(path, _volume())
    assert pred.slice_probs is None
    assert pred.probs.shape == (3,) and pred.features.shape == (1536,)


def test_predict_volume_unknown_aggregate(tmp_path):
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe=CT2_RECIPE)
    with pytest.raises(ConfigError, match="aggregate"):
        predict_volume(path, _volume(), aggregate="median")


def test_predict_volume_with_the_real_covidnet_ct2_recipe(tmp_path):
    recipe = get_recipe("covidnet-ct2", size=64)
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe=recipe.to_dict())
    pred = predict_volume(path, _volume())
    assert pred.slice_probs.shape[0] == SLICES and np.isclose(pred.probs.sum(), 1, atol=1e-5)
