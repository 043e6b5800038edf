"""Issue 13: slice models score only the informative (lung) slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import random_ct2s_checkpoint

from covidct.errors import ShapeError
from covidct.models.inference import predict_volume
from covidct.synthetic import make_phantom

SIZE = 32
SOFT_TISSUE_HU = 40.0


def _spread_batchnorm_means(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return random_ct2s_checkpoint(tmp_path_factory.mktemp("ckpt"), SIZE, adjust=_spread_batchnorm_means)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("COVID-19", shape=(12, 64, 64), spacing=(5.0, 3.0, 3.0), seed=1)


def with_lungless_slices(phantom, n: int = 3):
    """The phantom's volume with ``n`` chest slices without lung (lungs filled with soft tissue) on top."""
    import dataclasses

    arr = np.asarray(phantom.volume.array)
    k = int(np.argmax((phantom.lung_mask > 0).reshape(arr.shape[0], -1).sum(1)))
    solid = np.where(phantom.lung_mask[k] > 0, SOFT_TISSUE_HU, arr[k]).astype(np.float32)
    return dataclasses.replace(phantom.volume, array=np.concatenate([np.stack([solid] * n), arr]))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_only_informative_slices_are_scored_and_aggregated(checkpoint, phantom, backend: str) -> None:
    volume = phantom.volume
    everything = predict_volume(checkpoint, volume, backend="torch")
    keep = np.zeros(volume.num_slices, bool)
    keep[[1, 3, 4, 5, 6, 7, 8, 10]] = True
    some = predict_volume(checkpoint, volume, backend=backend, informative=keep)
    assert np.isnan(some.slice_probs[~keep]).all()
    np.testing.assert_allclose(some.slice_probs[keep], everything.slice_probs[keep], atol=1e-5)
    np.testing.assert_allclose(some.probs, everything.slice_probs[keep].mean(axis=0), atol=1e-5)
    assert np.abs(some.probs - everything.probs).max() > 1e-6  # leaving slices out changes the mean here


def test_informative_mask_is_checked(checkpoint, phantom) -> None:
    n = phantom.volume.num_slices
    with pytest.raises(ShapeError, match="one bool per slice"):
        predict_volume(checkpoint, phantom.volume, informative=np.ones(n + 1, bool))
    with pytest.raises(ShapeError, match="no slice"):
        predict_volume(checkpoint, phantom.volume, informative=np.zeros(n, bool))


def test_predictor_scores_lung_slices_only(checkpoint, phantom, tmp_path: Path) -> None:
    from covidct.quant import analyse_ct, lung_slice_mask
    from covidct.service.predictor import Predictor

    volume = with_lungless_slices(phantom)
    analysis = analyse_ct(volume)
    lung = lung_slice_mask(analysis.lung_labels, analysis.spacing)
    assert not lung[:3].any() and lung[3:].sum() > 0
    on = Predictor([checkpoint], explain=False, lung_slices=True).predict(volume)
    off = Predictor([checkpoint], explain=False, lung_slices=False).predict(volume)
    covid = on.class_names.index("COVID-19")
    assert [on.slice_scores[i] for i in np.flatnonzero(~lung)] == [0.0] * int((~lung).sum())
    np.testing.assert_allclose([on.slice_scores[i] for i in np.flatnonzero(lung)],
                               [off.slice_scores[i] for i in np.flatnonzero(lung)], atol=1e-4)
    expected = np.mean([off.slice_scores[i] for i in np.flatnonzero(lung)])
    assert abs(on.probabilities["COVID-19"] - expected) < 1e-3 and covid >= 0
