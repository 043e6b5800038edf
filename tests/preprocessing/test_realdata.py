"""Recipes and the body box on real hospital CT (../shared/data; skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.preprocessing import BodyBox, LungWindow, get_recipe


@pytest.fixture(scope="module")
def lidc_volume(shared_data):
    from covidct.io import read_volume

    return read_volume(shared_data / "lidc-idri-small" / "LIDC-IDRI-0001")


@pytest.mark.realdata
def test_body_box_on_real_ct_excludes_air_and_table(lidc_volume):
    img = lidc_volume.array[lidc_volume.num_slices // 2]
    x0, y0, x1, y1 = BodyBox()(LungWindow()(img))
    h, w = img.shape
    assert 0 < x1 - x0 < w and 0 < y1 - y0 < h
    outside = np.ones_like(img, dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert np.median(img[outside]) < -900  # what is cut away is (nearly all) air
    inside = img[y0:y1, x0:x1]
    assert (inside > -500).mean() > 0.3  # the box is mostly body


@pytest.mark.realdata
@pytest.mark.parametrize("name,options,shape", [
    ("covidnet-ct2", {"size": 128}, (3, 128, 128)),
    ("ai-corona", {"size": 128}, (3, 128, 128)),
    ("covidnet-3d", {"depth": 16, "resize_to": 160, "crop": 128}, (1, 16, 128, 128)),
    ("covidctnet", {"size": 128}, (1, 50, 128, 128)),
])
def test_recipes_on_real_ct(lidc_volume, name, options, shape):
    x = get_recipe(name, **options).prepare_volume(lidc_volume).array
    assert x.dtype == np.float32 and np.isfinite(x).all()
    assert x.shape[-len(shape):] == shape
    if name != "ai-corona":
        assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.realdata
def test_body_box_coarse_matches_full_resolution_on_a_real_study(shared_data):
    """Every slice of P001 (148): the default box (measured 2x coarser) within 2 px of the
    full-resolution one."""
    from covidct.io import read_volume

    volume = read_volume(shared_data / "covid-ct-md" / "COVID-19" / "P001")
    grey = LungWindow()(volume.array)
    full = np.array([BodyBox(scale=1)(s) for s in grey])
    coarse = np.array(BodyBox().boxes(grey, workers=2))
    assert np.abs(coarse - full).max() <= 2
