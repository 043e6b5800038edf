"""Quantification and its words on phantoms with known lesion patterns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from covidct.errors import ExplainError
from covidct.explain.lungs import segment_lungs
from covidct.explain.quantify import describe, quantify_abnormality, zone_map
from covidct.io.volume import Volume
from covidct.synthetic import make_phantom

SHAPE = (40, 128, 128)
SPACING = (2.5, 1.2, 1.2)


@pytest.mark.parametrize("seed", [0, 1])
def test_covid_phantom_is_bilateral_lower_zone(seed):
    phantom = make_phantom("COVID-19", shape=SHAPE, spacing=SPACING, seed=seed)
    quant = quantify_abnormality(phantom.volume, segment_lungs(phantom.volume))
    words = describe(quant)
    assert "bilateral" in words and "lower-zone predominant" in words, words
    assert quant.total.fraction > 0.02
    json.dumps(quant.to_dict())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pneumonia_phantom_is_unilateral(seed):
    phantom = make_phantom("Pneumonia", shape=SHAPE, spacing=SPACING, seed=seed)
    # The threshold lung mask loses dense consolidation on the pleura, so use the true lungs here.
    words = describe(quantify_abnormality(phantom.volume, phantom.lung_mask))
    assert words.startswith("unilateral"), words
    assert phantom.info["side"] in words


def test_normal_phantom_has_no_relevant_abnormality():
    phantom = make_phantom("Normal", shape=SHAPE, spacing=SPACING, seed=0)
    assert describe(quantify_abnormality(phantom.volume, phantom.lung_mask)).startswith("no relevant")


def test_heatmap_source_and_zones():
    phantom = make_phantom("COVID-19", shape=SHAPE, spacing=SPACING, seed=0)
    heat = phantom.lesion_mask.astype(np.float32)
    quant = quantify_abnormality(phantom.volume, phantom.lung_mask, heat)
    assert quant.source == "heatmap>=0.5" and quant.ggo_ml is None
    assert quant.total.abnormal_ml > 0
    zones = zone_map(phantom.lung_mask)
    assert set(np.unique(zones[phantom.lung_mask > 0])) == {1, 2, 3}


def test_bad_inputs_are_explain_errors():
    vol = Volume(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(ExplainError, match="shape"):
        quantify_abnormality(vol, np.ones((4, 8, 9), np.uint8))
    with pytest.raises(ExplainError, match="empty"):
        quantify_abnormality(vol, np.zeros((4, 8, 8), np.uint8))
    grey = Volume(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 1.0), is_hu=False)
    with pytest.raises(ExplainError, match="Hounsfield"):
        quantify_abnormality(grey, np.ones((4, 8, 8), np.uint8))
