"""Lung masks on phantoms (vs the true lungs) and on the real COVID-CT-MD series."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.errors import QuantError
from covidct.io.volume import Volume
from covidct.quant.lungs import LEFT_LUNG, RIGHT_LUNG, lung_volume_ml, segment_lungs
from covidct.synthetic import make_phantom

PHANTOM_SHAPE = (40, 128, 128)
PHANTOM_SPACING = (2.5, 1.2, 1.2)
MIN_DICE = 0.95
REAL_SERIES = ("COVID-19/P001", "CAP/cap001", "Normal/normal001")
LITRES_RANGE = (3000.0, 7000.0)
SIDE_SHARE_RANGE = (0.35, 0.65)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


@pytest.mark.parametrize(("label", "seed"), [("COVID-19", 0), ("Normal", 1), ("Pneumonia", 0)])
def test_phantom_lungs_dice_and_sides(label, seed):
    phantom = make_phantom(label, shape=PHANTOM_SHAPE, spacing=PHANTOM_SPACING, seed=seed)
    mask = segment_lungs(phantom.volume)
    assert mask.dtype == np.uint8 and mask.shape == PHANTOM_SHAPE
    truth = phantom.lung_mask
    assert dice(mask > 0, truth > 0) >= MIN_DICE
    for side in (RIGHT_LUNG, LEFT_LUNG):
        assert dice(mask == side, truth == side) >= 0.9, side
    # patient right = image left
    right_x = np.flatnonzero((mask == RIGHT_LUNG).any(axis=(0, 1))).mean()
    left_x = np.flatnonzero((mask == LEFT_LUNG).any(axis=(0, 1))).mean()
    assert right_x < left_x


def test_touching_lungs_are_split_at_the_midline():
    phantom = make_phantom("Normal", shape=PHANTOM_SHAPE, spacing=PHANTOM_SPACING, seed=0)
    arr = phantom.volume.array.copy()
    lungs = phantom.lung_mask > 0
    # open a 4-voxel air bridge between the lungs at mid-height in every slice with both lungs
    for z in range(arr.shape[0]):
        cols = np.flatnonzero(lungs[z].any(axis=0))
        if cols.size and (phantom.lung_mask[z] == 1).any() and (phantom.lung_mask[z] == 2).any():
            y = int(np.flatnonzero(lungs[z].any(axis=1)).mean())
            arr[z, y - 2 : y + 2, cols[0] : cols[-1]] = np.where(
                lungs[z, y - 2 : y + 2, cols[0] : cols[-1]] | True, -900.0, 0.0
            )
    vol = Volume(arr, phantom.volume.spacing)
    mask = segment_lungs(vol)
    share = lung_volume_ml(mask, vol.spacing, RIGHT_LUNG) / lung_volume_ml(mask, vol.spacing)
    assert 0.35 < share < 0.65


def test_no_lungs_is_a_quant_error():
    with pytest.raises(QuantError, match="No lung found"):
        segment_lungs(Volume(np.zeros((4, 32, 32), np.float32), (2.0, 1.0, 1.0)))


def test_lung_volume_ml():
    mask = np.zeros((2, 10, 10), np.uint8)
    mask[0, :5, :5] = 1
    mask[1, :2, :5] = 2
    assert lung_volume_ml(mask, (2.0, 1.0, 1.0)) == pytest.approx(0.07)
    assert lung_volume_ml(mask, (2.0, 1.0, 1.0), label=2) == pytest.approx(0.02)


@pytest.mark.realdata
@pytest.mark.parametrize("series", REAL_SERIES)
def test_real_series_lung_volume_and_sides(shared_data, series):
    from covidct.io import read_volume

    path = shared_data / "covid-ct-md" / series
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    volume = read_volume(path)
    mask = segment_lungs(volume)
    total = lung_volume_ml(mask, volume.spacing)
    right = lung_volume_ml(mask, volume.spacing, RIGHT_LUNG)
    assert LITRES_RANGE[0] <= total <= LITRES_RANGE[1], total
    assert SIDE_SHARE_RANGE[0] <= right / total <= SIDE_SHARE_RANGE[1], right / total
