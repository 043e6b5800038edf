"""Phantoms: tissue HU, class-specific lesion patterns, determinism, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from covidct.classes import COVID, NORMAL, PNEUMONIA
from covidct.errors import ConfigError, UnknownClassError
from covidct.synthetic import make_phantom
from covidct.synthetic.phantom import LUNG_LABEL_LEFT, LUNG_LABEL_RIGHT

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def phantoms():
    return {label: [make_phantom(label, seed=s) for s in SEEDS] for label in ("covid", "cp", "normal")}


def test_volume_contract(phantoms):
    p = phantoms["normal"][0]
    v = p.volume
    assert v.array.dtype == np.float32 and v.shape == (40, 192, 192)
    assert v.spacing == (2.5, 0.8, 0.8) and v.is_hu and v.meta.format == "synthetic"
    assert p.lesion_mask.dtype == bool and p.lesion_mask.shape == v.shape
    assert p.lung_mask.dtype == np.uint8 and set(np.unique(p.lung_mask)) == {0, 1, 2}
    assert p.label == NORMAL and not p.lesion_mask.any()


def test_aliases_and_unknown_label():
    assert make_phantom("cp", shape=(8, 64, 64)).label == PNEUMONIA
    assert make_phantom("COVID-19", shape=(8, 64, 64)).label == COVID
    with pytest.raises(UnknownClassError):
        make_phantom("flu", shape=(8, 64, 64))
    with pytest.raises(ConfigError):
        make_phantom("normal", shape=(3, 16, 16))


def test_tissue_hu(phantoms):
    p = phantoms["normal"][0]
    a = p.volume.array
    assert abs(float(a[:, :4, :4].mean()) + 1000) < 5  # air outside the body
    lung = (p.lung_mask > 0) & (a < -600)  # parenchyma, not vessels
    assert -880 < float(np.median(a[lung])) < -820
    assert 0.5 < float(p.lung_mask.astype(bool).mean() * 1 / 0.2) < 5  # lungs are a sizeable part
    fat = a[:, 96, 6:9]  # subcutaneous fat at the image's left edge
    assert -140 < float(np.median(fat)) < -60
    spine = a[:, 138, 96]
    assert 250 < float(np.median(spine)) < 1000
    assert a.max() > 700  # cortical bone
    right, left = p.lung_mask == LUNG_LABEL_RIGHT, p.lung_mask == LUNG_LABEL_LEFT
    xs_right, xs_left = np.nonzero(right)[2], np.nonzero(left)[2]
    assert xs_right.mean() < 96 < xs_left.mean()  # patient right = image left
    noise = a[:, :20, :20].std()
    assert 10 < noise < 30


def test_covid_lesions_bilateral_peripheral_lower(phantoms):
    for p in phantoms["covid"]:
        les, lung = p.lesion_mask, p.lung_mask
        assert (les & (lung == 1)).sum() > 200 and (les & (lung == 2)).sum() > 200, "bilateral"
        z = np.nonzero(les)[0]
        assert (z >= 20).sum() > (z < 20).sum(), "lower-lobe predominant"
        depth = ndimage.distance_transform_edt(lung > 0, sampling=p.volume.spacing)
        assert np.median(depth[les]) < 15.0, "peripheral / subpleural"
        hu = p.volume.array[les]
        assert -700 < np.median(hu) < -300, "ground glass"


def test_cp_lesion_unilateral_consolidation(phantoms):
    for p in phantoms["cp"]:
        les, lung = p.lesion_mask, p.lung_mask
        per_side = [(les & (lung == s)).sum() for s in (1, 2)]
        assert min(per_side) == 0 and max(per_side) > 1000, per_side
        assert -100 < np.median(p.volume.array[les]) < 50
        # air bronchograms: air inside the consolidation
        assert (p.volume.array[les] < -600).sum() > 5


def test_normal_has_no_lesion(phantoms):
    assert all(not p.lesion_mask.any() for p in phantoms["normal"])


def test_seeded():
    a = make_phantom("covid", shape=(12, 64, 64), seed=3).volume.array
    b = make_phantom("covid", shape=(12, 64, 64), seed=3).volume.array
    c = make_phantom("covid", shape=(12, 64, 64), seed=4).volume.array
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_fast_enough():
    make_phantom("covid", seed=5)  # warm up imports
    t = time.process_time()  # CPU time: robust to other processes sharing the cores
    make_phantom("covid", seed=6)
    assert time.process_time() - t < 2.5  # about 0.5 s of CPU
