"""Scans the analysis must not read as chest CTs (issue 21, 'Bad input'): a typed error or a warning
that says what was wrong, never numbers from the wrong thing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covidct.errors import LungNotFoundError, QuantError
from covidct.io import read_volume
from covidct.io.dicom_write import write_dicom_series
from covidct.io.volume import Volume
from covidct.quant import analyse_ct
from covidct.service.predictor import Predictor
from covidct.synthetic import make_phantom

SHAPE = (24, 128, 128)
SPACING = (2.5, 1.4, 1.4)
GAS_RADIUS_MM = 14.0


def soft_tissue_volume(gas_pockets: int = 0, seed: int = 0) -> Volume:
    """A body (+40 HU ellipse in air) with ``gas_pockets`` bowel-gas-like bubbles (-1000 HU, ~10 ml)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[:, (((y - 64) / 56.0) ** 2 + ((x - 64) / 60.0) ** 2 <= 1.0)[0]] = 40.0
    for _ in range(gas_pockets):
        cz, cy, cx = rng.integers(6, SHAPE[0] - 6), rng.integers(35, 93), rng.integers(30, 98)
        dist2 = ((z - cz) * SPACING[0]) ** 2 + ((y - cy) * SPACING[1]) ** 2 + ((x - cx) * SPACING[2]) ** 2
        hu[dist2 <= GAS_RADIUS_MM**2] = -1000.0
    return Volume(hu + rng.normal(0, 5, SHAPE).astype(np.float32), SPACING)


def test_no_lungs_is_a_typed_error_and_the_report_says_why():
    volume = soft_tissue_volume()
    with pytest.raises(LungNotFoundError, match="No lung found"):
        analyse_ct(volume)
    section = Predictor([]).predict(volume).quantitative
    assert section["available"] is False and "No lung found" in section["reason"]


def test_gas_outside_a_chest_is_not_read_as_lung():
    """Bowel gas (abdomen CT) passes the lung threshold and size; the body-share rule refuses it."""
    volume = soft_tissue_volume(gas_pockets=4)
    with pytest.raises(LungNotFoundError, match="No chest found") as err:
        analyse_ct(volume)
    assert "non-chest CT" in str(err.value)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["example_ct.nii.gz", "example_ct_dicom_j2k"])
def test_real_non_chest_ct_is_refused(shared_data: Path, name: str):
    """The two misc-ct scans (TotalSegmentator examples) read 389 ml and 25 ml of 'lung' with 2-3 %
    involvement before this rule; now they are refused with the reason."""
    volume = read_volume(shared_data / "misc-ct" / name)
    with pytest.raises(LungNotFoundError, match="No chest found"):
        analyse_ct(volume)
    section = Predictor([]).predict(volume).quantitative
    assert section["available"] is False and "non-chest CT" in section["reason"]


@pytest.mark.parametrize("slices", [1, 2])
def test_a_single_slice_is_refused(slices: int):
    phantom = make_phantom("COVID-19", shape=(12, 96, 96), spacing=(5.0, 2.0, 2.0), seed=0)
    one = Volume(phantom.volume.array[5 : 5 + slices].copy(), phantom.volume.spacing)
    with pytest.raises(QuantError, match="at least 3 slices"):
        analyse_ct(one)
    assert Predictor([]).predict(one).quantitative["available"] is False


def test_slice_gaps_are_a_warning_in_the_report(tmp_path: Path):
    phantom = make_phantom("COVID-19", shape=(20, 96, 96), spacing=(5.0, 2.0, 2.0), seed=1)
    files = write_dicom_series(phantom.volume, tmp_path / "series", shuffle_names=False)
    ordered = sorted(files, key=lambda p: float(read_volume(p).origin[2]))
    for missing in ordered[9:11]:  # two slices lost in the middle of the chest
        missing.unlink()
    result = Predictor([]).predict(tmp_path / "series")
    assert result.quantitative["available"] is True
    assert any(w.startswith("slice positions are uneven (gap of") for w in result.quantitative["warnings"])
    assert any(w.startswith("quantitative CT: slice positions are uneven") for w in result.warnings)


def test_a_complete_series_has_no_quantitative_warning():
    phantom = make_phantom("COVID-19", shape=(20, 96, 96), spacing=(5.0, 2.0, 2.0), seed=1)
    assert analyse_ct(phantom.volume).warnings == []
