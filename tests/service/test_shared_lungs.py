"""Issue 13: the Predictor segments the lungs once per study (the quantitative stage's analysis-grid
labels) and shares them with the lung-slice selection and the explanation."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import random_ct2s_checkpoint

from covidct.explain import ct_analysis, pipeline
from covidct.explain.ct_analysis import analyse_ct, grid_factor
from covidct.explain.lungs import lung_volume_ml
from covidct.service import predictor as predictor_module
from covidct.service.predictor import Predictor
from covidct.service.quantitative import quantify_study
from covidct.synthetic import make_phantom

SIZE = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return random_ct2s_checkpoint(tmp_path_factory.mktemp("ckpt"), SIZE)


@pytest.fixture(scope="module")
def volume():
    """A COVID-19 phantom at 0.7 mm pixels, so the analysis grid is 2x2-averaged (factor 2)."""
    vol = make_phantom("COVID-19", shape=(12, 128, 128), spacing=(5.0, 0.7, 0.7), seed=3).volume
    assert grid_factor(vol) == 2
    return vol


def count_segmentations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count `segment_lungs` calls from every module that calls it in the Predictor's path."""
    calls: list[int] = []
    for module in (ct_analysis, pipeline, predictor_module):
        original = module.segment_lungs

        def counted(vol, _original=original):
            calls.append(vol.shape[1])
            return _original(vol)

        monkeypatch.setattr(module, "segment_lungs", counted)
    return calls


def test_shared_lungs_give_the_standalone_report(checkpoint, volume, monkeypatch) -> None:
    calls = count_segmentations(monkeypatch)
    shared = Predictor([checkpoint], backend="torch").predict(volume)
    assert calls == [64]  # once per study, on the 2x2 analysis grid
    calls.clear()
    separate = Predictor([checkpoint], backend="torch", share_lungs=False).predict(volume)
    assert calls == [64, 128]  # the quantitative stage's, then again at full resolution
    analysis = analyse_ct(volume)
    standalone = {"available": True, **analysis.to_dict()}
    assert shared.quantitative == standalone == separate.quantitative
    assert shared.quantitative == quantify_study(volume).section
    # the same slices scored, the same probabilities, key slices and heatmap
    assert shared.slice_scores == separate.slice_scores
    assert shared.probabilities == separate.probabilities
    assert shared.key_slices == separate.key_slices
    np.testing.assert_array_equal(shared.heatmap, separate.heatmap)
    np.testing.assert_array_equal(shared.lesion_labels, separate.lesion_labels)
    # the explanation's lung volumes come from the shared labels on the volume's grid
    lungs = analysis.lung_labels_full()
    assert lungs.shape == volume.shape
    assert shared.distribution["lung_volume_ml"]["total"] == round(lung_volume_ml(lungs, volume.spacing), 1)


def test_shared_lung_labels_are_the_analysis_labels_on_the_volume_grid(volume) -> None:
    outcome = quantify_study(volume)
    analysis = analyse_ct(volume)
    np.testing.assert_array_equal(outcome.lung_labels, analysis.lung_labels_full())
    # block k of the analysis grid covers volume pixels 2k and 2k+1 in y and x
    np.testing.assert_array_equal(outcome.lung_labels[:, ::2, ::2], analysis.lung_labels)
    np.testing.assert_array_equal(outcome.lung_labels[:, 1::2, 1::2], analysis.lung_labels)
