"""CovidCTNet's released classifier (../shared/data/published-weights/covidctnet) in covidct.

Parity with Keras itself (Keras 3 on the torch backend, no TensorFlow; the 'keras' test extra): the
notebook's Sequential is rebuilt, the released HDF5 loaded into it, and its softmax compared with
covidct's. Then the imported checkpoint is used where checkpoints are used (Predictor, explain).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from covidct.models import count_params, load_checkpoint
from covidct.models.importers import import_weights

pytestmark = pytest.mark.realdata

RELEASED_SHA256 = "3fc18a478c8f793ea171759843de41e48930df2ca702074eb0be1e5adaf50c90"
RESIDUAL_LIKE_AMPLITUDES = (0.01, 0.02, 0.05, 0.1, 0.2)
"""Random inputs U(0, a): residual-sized values keep the softmax away from 0/1 (a >= 0.5 saturates it)."""
KERAS_ATOL = 1e-5


@pytest.fixture(scope="module")
def released_h5(shared_data: Path) -> Path:
    path = shared_data / "published-weights" / "covidctnet" / "weight_cnn_CovidCtNet_v2_final.h5"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def released_ckpt(released_h5: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_weights(
        "covidctnet-classifier", released_h5, tmp_path_factory.mktemp("w") / "covidctnet.ckpt"
    )


def test_imported_checkpoint(released_ckpt: Path) -> None:
    ckpt = load_checkpoint(released_ckpt)
    assert count_params(ckpt.model) == 920_715 and ckpt.model.num_flat == 1_152
    assert ckpt.provenance["imported_from"]["sha256"] == RELEASED_SHA256
    assert ckpt.provenance["imported_from"]["file"] == "weight_cnn_CovidCtNet_v2_final.h5"
    assert ckpt.recipe["name"] == "covidctnet-released" and ckpt.recipe["size"] == 128


def _keras_sequential():
    """The classifier exactly as Training-/Testing-CovidCTNet.ipynb builds it."""
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((50, 128, 128, 1))])
    model.add(layers.Conv3D(8, (3, 3, 3), activation="relu"))
    model.add(layers.Conv3D(8, (3, 3, 3), activation="relu", padding="same"))
    model.add(layers.MaxPooling3D((2, 2, 2)))
    for filters in (16, 32, 64, 128):
        model.add(layers.Conv3D(filters, (3, 3, 3), activation="relu", padding="same"))
        model.add(layers.Conv3D(filters, (3, 3, 3), activation="relu", padding="same"))
        model.add(layers.MaxPooling3D((2, 2, 2)))
    model.add(layers.Flatten())
    model.add(layers.Dense(32, activation="relu"))
    model.add(layers.Dropout(0.3))
    model.add(layers.Dense(3, activation="softmax"))
    return model


def test_softmax_matches_keras(released_h5: Path, released_ckpt: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras  # the 'keras' test extra, pinned in requirements.lock

    assert keras.backend.backend() == "torch", "this test needs KERAS_BACKEND=torch (no TensorFlow here)"
    reference = _keras_sequential()
    reference.load_weights(str(released_h5))
    assert reference.count_params() == 920_715
    rng = np.random.default_rng(0)
    inputs = np.stack([rng.random((50, 128, 128), dtype=np.float32) * a for a in RESIDUAL_LIKE_AMPLITUDES])
    keras_probs = np.asarray(reference.predict(inputs[..., None], verbose=0))[
        :, [0, 2, 1]
    ]  # -> covidct order
    model = load_checkpoint(released_ckpt).model.eval()
    with torch.no_grad():
        ours = torch.softmax(model(torch.from_numpy(inputs[:, None])), dim=1).numpy()
    assert np.abs(ours - keras_probs).max() <= KERAS_ATOL
    assert keras_probs.min() > 1e-4, "inputs saturate the softmax; the comparison would prove little"
    assert np.ptp(keras_probs[:, 0]) > 0.1  # the five inputs give clearly different outputs


@pytest.mark.slow  # ~45 s on a loaded 2-core machine (Grad-CAM, lung masks, report)
def test_checkpoint_predicts_and_explains_a_real_series(released_ckpt: Path, shared_data: Path) -> None:
    from covidct.io import read_volume
    from covidct.models import predict_volume
    from covidct.service.predictor import Predictor

    series = next((shared_data / "lidc-idri-small" / "LIDC-IDRI-0002").glob("*/*"))
    result = Predictor([str(released_ckpt)], explain=True).predict(series)
    direct = predict_volume(load_checkpoint(released_ckpt), read_volume(series))
    assert list(result.probabilities) == ["Normal", "Pneumonia", "COVID-19"]
    np.testing.assert_allclose(list(result.probabilities.values()), direct.probs, atol=1e-5)
    assert result.heatmap is not None and result.heatmap.shape == result.volume.shape
    assert result.overlays, "no explained key slices"
