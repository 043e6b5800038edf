"""Lung regions (zones, periphery) and the share of a mask in them, on phantoms with known lesions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from covidct.errors import QuantError
from covidct.quant import analyse_ct
from covidct.quant.regions import LungRegions, zone_map
from covidct.synthetic import make_phantom

SHAPE = (40, 128, 128)
SPACING = (2.5, 1.2, 1.2)


@pytest.mark.parametrize("seed", [0, 1])
def test_covid_phantom_is_bilateral_lower_zone(seed):
    phantom = make_phantom("COVID-19", shape=SHAPE, spacing=SPACING, seed=seed)
    analysis = analyse_ct(phantom.volume)
    words = analysis.report.distribution
    assert "bilateral" in words and "lower-zone predominant" in words, words
    quant = analysis.lesion_quantification()
    assert quant.total.fraction > 0.02 and quant.source == "hu-rule"
    assert quant.total.fraction == pytest.approx(analysis.report.involvement["total"], abs=1e-4)
    json.dumps(quant.to_dict())


def test_heatmap_source_and_zones():
    phantom = make_phantom("COVID-19", shape=SHAPE, spacing=SPACING, seed=0)
    regions = LungRegions.of(phantom.lung_mask, SPACING, inferior_first=False)
    quant = regions.quantify(phantom.lesion_mask > 0, "heatmap>=0.5")
    assert quant.source == "heatmap>=0.5" and quant.ggo_ml is None
    assert quant.total.abnormal_ml > 0
    assert set(np.unique(regions.zones[phantom.lung_mask > 0])) == {1, 2, 3}


def test_zone_map_follows_the_slice_direction():
    labels = np.zeros((9, 2, 2), np.uint8)
    labels[:, :, 0] = 1
    top_down = zone_map(labels, inferior_first=False)
    bottom_up = zone_map(labels[::-1], inferior_first=True)
    np.testing.assert_array_equal(bottom_up[::-1], top_down)
    assert (top_down[:3, :, 0] == 1).all() and (bottom_up[:3, :, 0] == 3).all()


def test_mask_on_another_grid_is_refused():
    labels = np.ones((4, 8, 8), np.uint8)
    regions = LungRegions.of(labels, (1.0, 1.0, 1.0), inferior_first=False)
    with pytest.raises(QuantError, match="shape"):
        regions.quantify(np.ones((4, 8, 9), bool), "heatmap>=0.5")
