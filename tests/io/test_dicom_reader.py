"""DICOM reader on synthetic series written with pydicom: round trips, ordering, selection, bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from covidct.errors import (
    CorruptFileError,
    InconsistentSeriesError,
    MissingDecoderError,
    MissingPixelDataError,
    ModalityError,
    NoDataError,
    SeriesSelectionError,
)
from covidct.io import list_series, read_volume
from covidct.io.dicom import decoding as dicom_decoding

from .conftest import make_hu, write_series

SPACING = (2.5, 0.8, 0.7)


@pytest.mark.parametrize("syntax", ["explicit-le", "rle", "jpeg-ls"])
def test_round_trip_lossless_exact_and_ordered(tmp_path: Path, syntax: str) -> None:
    hu = make_hu()
    paths = write_series(tmp_path, hu, syntax=syntax, spacing=SPACING)
    vol = read_volume(tmp_path)
    assert vol.is_hu and vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == pytest.approx(SPACING)
    assert vol.meta.files == [p.name for p in paths]  # slice order despite shuffled names
    assert vol.meta.files != sorted(vol.meta.files)
    assert vol.meta.warnings == []
    assert vol.meta.modality == "CT" and vol.meta.patient_id == "TEST-001" and vol.meta.kernel == "B30f"
    assert vol.origin == pytest.approx((-10.0, -20.0, 0.0))
    np.testing.assert_allclose(vol.direction[:, 2], [0, 0, -1])  # superior -> inferior


def test_order_is_by_position_not_instance_number(tmp_path: Path) -> None:
    hu = make_hu((6, 16, 16))
    # positions increase with k: slice 0 is most inferior, so it must come last
    write_series(tmp_path, hu, positions=[float(k * 2.5) for k in range(6)])
    vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, hu[::-1])


def test_single_file_and_zip(tmp_path: Path) -> None:
    hu = make_hu((5, 16, 16))
    paths = write_series(tmp_path / "series", hu)
    one = read_volume(paths[2])
    np.testing.assert_array_equal(one.array[0], hu[2])
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, f"study/{p.name}")
    vol = read_volume(archive)
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.meta.files[0].startswith("study/s")


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", make_hu((2, 8, 8)))
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(paths[0], "../outside.dcm")
    with pytest.raises(CorruptFileError, match="outside the archive"):
        read_volume(archive)
    assert not (tmp_path / "outside.dcm").exists()


def test_nested_folders_are_searched(tmp_path: Path) -> None:
    hu = make_hu((4, 8, 8))
    write_series(tmp_path / "patient" / "study" / "series", hu)
    np.testing.assert_array_equal(read_volume(tmp_path).array, hu)


def test_two_series_chosen_by_rules_and_reported(tmp_path: Path) -> None:
    main = make_hu((8, 16, 16), seed=1)
    write_series(tmp_path, main, series_uid="1.2.3.1")
    write_series(
        tmp_path,
        make_hu((10, 16, 16), seed=2),
        series_uid="1.2.3.2",
        image_type=("DERIVED", "SECONDARY", "AXIAL"),
    )
    write_series(tmp_path, make_hu((12, 16, 16), seed=3), series_uid="1.2.3.3", modality="MR")
    vol = read_volume(tmp_path)
    assert vol.meta.series_uid == "1.2.3.1"
    np.testing.assert_array_equal(vol.array, main)
    assert len(vol.meta.warnings) == 2
    assert all("skipped series" in w for w in vol.meta.warnings)
    assert any("1.2.3.2" in w and "DERIVED" in w for w in vol.meta.warnings)
    other = read_volume(tmp_path, series_uid="1.2.3.2")
    assert other.num_slices == 10
    infos = list_series(tmp_path)
    assert [i.uid for i in infos][0] == "1.2.3.1"
    assert {i.uid: i.num_slices for i in infos} == {"1.2.3.1": 8, "1.2.3.2": 10, "1.2.3.3": 12}
    assert infos[0].orientation == "axial" and infos[0].image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    with pytest.raises(SeriesSelectionError, match="1.2.3.9.*not in this data.*1.2.3.1"):
        read_volume(tmp_path, series_uid="1.2.3.9")


def test_missing_slice_warns_with_position(tmp_path: Path) -> None:
    hu = make_hu((8, 8, 8))
    paths = write_series(tmp_path, hu, spacing=SPACING)
    paths[4].unlink()  # slice at z = -10.0 mm
    vol = read_volume(tmp_path)
    assert vol.num_slices == 7 and vol.spacing[0] == pytest.approx(2.5)
    gap = [w for w in vol.meta.warnings if w.startswith("gap")]
    assert (
        len(gap) == 1
        and "5.00 mm" in gap[0]
        and "7.50 -> 12.50 mm" in gap[0]
        and "1 slice(s) missing" in gap[0]
    )


def test_duplicate_positions_and_unequal_spacing_warn(tmp_path: Path) -> None:
    hu = make_hu((5, 8, 8))
    write_series(tmp_path, hu, positions=[0.0, -2.5, -2.5, -5.0, -8.0])
    vol = read_volume(tmp_path)
    assert vol.num_slices == 4
    assert any("duplicate slice position" in w for w in vol.meta.warnings)
    assert any("unequal slice spacing" in w for w in vol.meta.warnings)


def test_gantry_tilt_warns(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((4, 8, 8)))
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [-10.0, -20.0 + 0.5 * k, -2.5 * k]
        ds.GantryDetectorTilt = 11.3
        ds.save_as(p)
    warnings = read_volume(tmp_path).meta.warnings
    assert any("gantry tilt 11.3" in w for w in warnings)
    assert any("off the slice normal" in w for w in warnings)


def test_padding_value_becomes_air(tmp_path: Path) -> None:
    hu = make_hu((3, 8, 8))
    paths = write_series(tmp_path, hu)
    for p in paths:
        ds = pydicom.dcmread(p)
        arr = ds.pixel_array.copy()
        arr[0, :] = 0  # stored 0 = -1024 HU, declared as padding
        ds.PixelData = arr.tobytes()
        ds.add_new(0x00280120, "US", 0)  # PixelPaddingValue
        ds.save_as(p)
    vol = read_volume(tmp_path)
    assert (vol.array[:, 0, :] == -1024).all()
    assert vol.meta.extra["padding_pixels"] >= 3 * 8


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="empty"):
        read_volume(tmp_path)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "data.bin").write_bytes(b"\x00" * 300)
    with pytest.raises(NoDataError, match="No DICOM files found.*2 files"):
        read_volume(tmp_path)


def test_truncated_dicom(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((3, 16, 16)))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 200])  # pixel data cut short
    with pytest.raises(CorruptFileError, match=paths[1].name):
        read_volume(tmp_path)
    paths[1].write_bytes(data[:300])  # cut inside the header
    with pytest.raises(CorruptFileError, match="damaged or truncated"):
        read_volume(tmp_path)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((3, 8, 8)))
    ds = pydicom.dcmread(paths[0])
    del ds.PixelData
    ds.save_as(paths[0])
    with pytest.raises(MissingPixelDataError, match="no pixel data"):
        read_volume(tmp_path)


def test_non_ct_modality(tmp_path: Path) -> None:
    hu = make_hu((3, 8, 8))
    write_series(tmp_path, hu, modality="MR")
    with pytest.raises(ModalityError, match="MR, not CT.*allow_modality"):
        read_volume(tmp_path)
    vol = read_volume(tmp_path, allow_modality=True)
    assert vol.meta.modality == "MR"


def test_mixed_rows_columns(tmp_path: Path) -> None:
    write_series(tmp_path, make_hu((4, 16, 16)), series_uid="1.2.9")
    write_series(tmp_path / "odd", make_hu((1, 8, 12)), series_uid="1.2.9", positions=[-20.0])
    with pytest.raises(InconsistentSeriesError, match="16x16: 4 slices, 8x12: 1 slices"):
        read_volume(tmp_path)


def test_missing_decoder_names_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path, make_hu((3, 8, 8)), syntax="rle")
    monkeypatch.setattr(dicom_decoding, "decoder_available", lambda ts: False)
    with pytest.raises(MissingDecoderError, match="pip install pylibjpeg-rle"):
        read_volume(tmp_path)


def test_missing_path() -> None:
    with pytest.raises(NoDataError, match="does not exist"):
        read_volume("/nonexistent/covidct/path")


def test_deflated_series(tmp_path: Path) -> None:
    """Deflated syntax: the header pass reads an inflated copy, the pixel pass must re-read the file."""
    hu = make_hu((3, 8, 8))
    for path in write_series(tmp_path, hu):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_volume(tmp_path).array, hu)
