"""RescaleSlope and RescaleIntercept other than 1 / -1024 (issue 21, item 6).

Every other fixture has slope 1, so a reader that ignored the slope passed every test. Here a series
is written twice with the same HU: a reference (slope 1, its own intercept, stored values made even)
and a copy with slope 2, the stored values halved and the intercept moved by `INTERCEPT_SHIFT`. Both
must read to the same HU, bit for bit, and give the same analysis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from covidct.io import read_volume
from covidct.io.dicom_write import write_dicom_series
from covidct.quant import analyse_ct
from covidct.synthetic import make_phantom

SLOPE = 2
INTERCEPT_SHIFT = -24
"""New intercept = old - 24: stored' = (stored + 24) / 2 stays non-negative for unsigned pixel data."""


def rewrite(files: list[Path], out: Path, *, slope2: bool) -> Path:
    """Copy a slope-1 uncompressed series to ``out`` with even stored values (HU = stored + b); with
    ``slope2`` store (stored + 24) / 2 with slope 2 and intercept b - 24 (the same HU)."""
    out.mkdir(parents=True)
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert float(ds.RescaleSlope) == 1.0 and not ds.file_meta.TransferSyntaxUID.is_compressed
        stored = ds.pixel_array.astype(np.int64) & ~1  # even, so halving is exact
        intercept = float(ds.RescaleIntercept)
        if slope2:
            stored = (stored - INTERCEPT_SHIFT) // SLOPE
            ds.RescaleSlope, ds.RescaleIntercept = str(SLOPE), str(intercept + INTERCEPT_SHIFT)
        if "PixelPaddingValue" in ds:  # padding by stored value would not survive the rewrite
            del ds.PixelPaddingValue
        ds.PixelData = stored.astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(out / f"{i:04d}.dcm")
    return out


def assert_same_hu_and_analysis(files: list[Path], tmp_path: Path) -> None:
    reference = read_volume(rewrite(files, tmp_path / "slope1", slope2=False))
    halved = read_volume(rewrite(files, tmp_path / "slope2", slope2=True))
    stored = pydicom.dcmread(next((tmp_path / "slope2").iterdir()))
    assert float(stored.RescaleSlope) == SLOPE  # the copy really has slope 2 and another intercept
    np.testing.assert_array_equal(halved.array, reference.array)
    assert analyse_ct(halved).to_dict() == analyse_ct(reference).to_dict()


def test_slope_2_synthetic_series(tmp_path: Path):
    phantom = make_phantom("COVID-19", shape=(16, 96, 96), spacing=(5.0, 2.0, 2.0), seed=2)
    files = write_dicom_series(phantom.volume, tmp_path / "written")
    assert_same_hu_and_analysis(files, tmp_path)


@pytest.mark.realdata
def test_slope_2_real_series(shared_data: Path, tmp_path: Path):
    """LIDC-IDRI-0001 (16 slices, uncompressed, signed 16-bit) rewritten with slope 2."""
    files = sorted((shared_data / "lidc-idri-small" / "LIDC-IDRI-0001").rglob("*.dcm"))
    assert len(files) == 16
    assert_same_hu_and_analysis(files, tmp_path)
