"""NIfTI round trips and orientation; PNG/JPG slices."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from covidct.errors import CorruptFileError, InconsistentSeriesError
from covidct.io import Volume, read_image, read_volume, write_nifti
from covidct.io.images import natural_key

from .conftest import make_hu, write_series


def test_nifti_round_trip(tmp_path: Path) -> None:
    hu = make_hu((7, 12, 10))
    vol = Volume(
        array=hu, spacing=(3.0, 0.5, 0.6), origin=(1.0, 2.0, 3.0), direction=np.diag([1.0, 1.0, -1.0])
    )
    out = write_nifti(vol, tmp_path / "v.nii.gz")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, hu)
    assert back.spacing == pytest.approx((3.0, 0.5, 0.6))
    assert back.origin == pytest.approx((1.0, 2.0, 3.0))
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    assert back.meta.format == "nifti" and back.is_hu


def test_nifti_ras_file_is_reoriented(tmp_path: Path) -> None:
    """A RAS file (i runs L->R, j P->A, k I->S) comes back as (z S->I, y A->P, x R->L)."""
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (i, j, k) in RAS, +k superior
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "ras.nii")
    vol = read_volume(tmp_path / "ras.nii")
    expected = np.transpose(data[::-1, ::-1, ::-1], (2, 1, 0))  # flip R->L, A->P, S->I then (z, y, x)
    np.testing.assert_array_equal(vol.array, expected)
    assert vol.spacing == pytest.approx((4.0, 3.0, 2.0))
    np.testing.assert_allclose(vol.direction, np.diag([1.0, 1.0, -1.0]), atol=1e-9)


def test_dicom_to_nifti_matches(tmp_path: Path) -> None:
    hu = make_hu((6, 16, 12))
    write_series(tmp_path / "dcm", hu, spacing=(2.0, 0.7, 0.9))
    dicom = read_volume(tmp_path / "dcm")
    back = read_volume(write_nifti(dicom, tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(back.array, dicom.array)
    assert back.spacing == pytest.approx(dicom.spacing)
    assert back.origin == pytest.approx(dicom.origin)


def test_corrupt_nifti(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CorruptFileError, match="bad.nii.gz"):
        read_volume(bad)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_read_image_modes(tmp_path: Path, mode: str) -> None:
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (7, 1))
    img = Image.fromarray(grey).convert(mode)
    path = tmp_path / f"slice%{mode}.png"
    img.save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == grey.shape
    np.testing.assert_allclose(out, grey, atol=2)


def test_image_folder_natural_order(tmp_path: Path) -> None:
    for n in (1, 2, 10):
        Image.fromarray(np.full((5, 6), n, dtype=np.uint8)).save(tmp_path / f"{n}.png")
    vol = read_volume(tmp_path)
    assert vol.meta.files == ["1.png", "2.png", "10.png"]
    assert not vol.is_hu and vol.meta.format == "image"
    assert vol.array[:, 0, 0].tolist() == [1.0, 2.0, 10.0]
    assert sorted(["10", "2", "1"], key=natural_key) == ["1", "2", "10"]


def test_image_folder_with_label_file(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "1.jpg")
    (tmp_path / "labels.csv").write_text("file,label\n1.jpg,COVID\n")
    assert read_volume(tmp_path).meta.files == ["1.jpg"]


def test_image_folder_mixed_sizes(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "1.png")
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(tmp_path / "2.png")
    with pytest.raises(InconsistentSeriesError, match="differ in size"):
        read_volume(tmp_path)


def test_corrupt_image(tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(CorruptFileError, match="x.jpg"):
        read_image(bad)
