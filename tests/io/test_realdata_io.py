"""Readers on the real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import covidct.cli.data_commands  # noqa: F401
from covidct.cli.app import app
from covidct.io import list_series, read_class_folders, read_image, read_volume
from covidct.io.dicom import OUT_OF_FIELD_HU

pytestmark = pytest.mark.realdata

HU_MIN, HU_MAX = -1024.0, 3100.0
CTMD = [("COVID-19", "P001", 148), ("CAP", "cap001", 168), ("Normal", "normal001", 154)]


@pytest.mark.parametrize(("cls", "case", "n"), CTMD)
def test_covid_ct_md_inspect(shared_data: Path, cls: str, case: str, n: int) -> None:
    folder = shared_data / "covid-ct-md" / cls / case
    result = CliRunner().invoke(app, ["inspect", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    with open(folder.parent / f"{case}_slice_labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    header = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    in_plane = float(header.PixelSpacing[0])
    thickness = float(header.SliceThickness)
    assert summary["num_slices"] == n == len(rows)
    assert summary["shape"] == [n, 512, 512]
    assert summary["spacing_mm"][0] == pytest.approx(2.0, abs=1e-3) == thickness
    assert summary["spacing_mm"][1] == pytest.approx(in_plane, abs=1e-3)
    assert summary["spacing_mm"][2] == pytest.approx(float(header.PixelSpacing[1]), abs=1e-3)
    if case == "P001":
        assert summary["spacing_mm"][1] == pytest.approx(0.748, abs=1e-3)
    assert HU_MIN <= summary["hu_range"][0] and summary["hu_range"][1] <= HU_MAX
    assert summary["files"] == [r["file"] for r in rows]  # exactly the slice-label order
    assert summary["warnings"] == [] and summary["is_hu"] is True and summary["modality"] == "CT"


def test_lidc_nested_with_padding(shared_data: Path) -> None:
    root = shared_data / "lidc-idri-small"
    infos = list_series(root)
    assert sorted(i.num_slices for i in infos) == [11, 12, 16]
    for info in infos:
        vol = read_volume(root, series_uid=info.uid)
        assert vol.num_slices == info.num_slices
        assert vol.array.min() >= OUT_OF_FIELD_HU  # padding (-2048 / -3024 HU) mapped to air
        assert not np.isin(vol.array, [-2048.0, -3024.0]).any()
        assert vol.meta.extra["padding_pixels"] > 0
        z = [
            float(pydicom.dcmread(root / f, stop_before_pixels=True).ImagePositionPatient[2])
            for f in vol.meta.files
        ]
        assert z == sorted(z, reverse=True)  # superior -> inferior
        assert vol.spacing[0] == pytest.approx(float(np.median(-np.diff(z))), abs=1e-3)
    default = read_volume(root)
    assert default.num_slices == 16 and len(default.meta.warnings) == 2  # two other series reported


def test_jpeg2000_series(shared_data: Path) -> None:
    vol = read_volume(shared_data / "misc-ct" / "example_ct_dicom_j2k")
    assert vol.shape == (20, 512, 512)
    assert vol.spacing[1] == pytest.approx(0.9766, abs=1e-3)
    assert -1024.0 <= vol.array.min() and vol.array.max() <= 3071.0
    assert vol.meta.extra["transfer_syntax"] == "1.2.840.10008.1.2.4.90"


def test_nifti_example(shared_data: Path) -> None:
    vol = read_volume(shared_data / "misc-ct" / "example_ct.nii.gz")
    assert vol.shape == (112, 101, 122) and vol.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert vol.is_hu and vol.array.min() < -900  # air around the body
    np.testing.assert_allclose(vol.direction, np.diag([1.0, 1.0, -1.0]), atol=1e-6)


def test_ucsd_images_and_class_folders(shared_data: Path) -> None:
    root = shared_data / "ucsd-covid-ct"
    with pytest.warns(UserWarning, match="patient leakage"):
        recs = read_class_folders(root)
    counts = {label: sum(r.label == label for r in recs) for label in ("COVID-19", "Non-COVID")}
    assert counts == {"COVID-19": 349, "Non-COVID": 397}
    assert all(r.source == "UCSD" and r.patient_id == r.path.stem for r in recs)
    with_percent = [r for r in recs if "%" in r.path.name][:5]
    assert with_percent
    for rec in with_percent + recs[::150]:
        img = read_image(rec.path)
        assert img.dtype == np.uint8 and img.ndim == 2 and min(img.shape) >= 32


def test_fast_jpeg_lossless_path_matches_pydicom(shared_data: Path) -> None:
    """The imagecodecs fast path (when installed) decodes exactly what pydicom + pylibjpeg decode."""
    folder = shared_data / "covid-ct-md" / "COVID-19" / "P001"
    vol = read_volume(folder)
    for k in (0, 70, 147):
        ds = pydicom.dcmread(folder / vol.meta.files[k])
        expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.array[k], expected)
