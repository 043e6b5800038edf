"""write_dicom_series: read our own files back with pydicom; lossless syntaxes keep HU exactly."""

from __future__ import annotations

import re

import numpy as np
import pydicom
import pytest

from covidct.errors import CovidCTError, UnknownNameError
from covidct.io.dicom_write import HU_MAX, HU_MIN, MissingEncoderError, hu_to_stored, write_dicom_series
from covidct.synthetic import make_phantom

LOSSLESS = ["explicit-le", "implicit-le", "rle", "jpeg-ls", "jpeg2000"]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("covid", shape=(6, 64, 64), seed=0)


def _read_hu(paths):
    dss = [pydicom.dcmread(p) for p in paths]
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    return dss, hu


@pytest.mark.parametrize("syntax", LOSSLESS)
def test_lossless_round_trip(tmp_path, phantom, syntax):
    paths = write_dicom_series(phantom.volume, tmp_path, transfer_syntax=syntax)
    dss, hu = _read_hu(paths)
    expected = np.clip(np.rint(phantom.volume.array), HU_MIN, HU_MAX)
    assert np.array_equal(hu, expected)
    assert len({d.file_meta.TransferSyntaxUID for d in dss}) == 1


def test_geometry_and_tags(tmp_path, phantom):
    v = phantom.volume
    paths = write_dicom_series(v, tmp_path, patient_id="P1", extra_tags={"InstitutionName": "Test"})
    dss = [pydicom.dcmread(p) for p in paths]
    assert [int(d.InstanceNumber) for d in dss] == list(range(1, v.num_slices + 1))
    z = [float(d.ImagePositionPatient[2]) for d in dss]
    assert np.allclose(np.diff(z), -v.spacing[0])  # superior -> inferior
    assert np.allclose([float(d.SliceLocation) for d in dss], z)
    d0 = dss[0]
    assert [float(s) for s in d0.PixelSpacing] == [v.spacing[1], v.spacing[2]]
    assert float(d0.SliceThickness) == v.spacing[0]
    assert [float(s) for s in d0.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert list(d0.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert d0.Modality == "CT" and d0.PatientID == "P1" and d0.InstitutionName == "Test"
    assert float(d0.RescaleIntercept) == -1024 and float(d0.RescaleSlope) == 1
    assert d0.PixelRepresentation == 0 and d0.BitsStored == 12
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({getattr(d, tag) for d in dss}) == 1
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)
    assert d0.Manufacturer and d0.ConvolutionKernel and d0.PatientAge and d0.PatientSex


def test_shuffled_names(tmp_path, phantom):
    paths = write_dicom_series(phantom.volume, tmp_path / "a", seed=1)
    assert all(re.fullmatch(r"[0-9a-f]{16}", p.name) for p in paths)
    assert [p.name for p in paths] != sorted(p.name for p in paths) or len(paths) < 3
    same = write_dicom_series(phantom.volume, tmp_path / "b", seed=1)
    assert [p.name for p in same] == [p.name for p in paths]
    ordered = write_dicom_series(phantom.volume, tmp_path / "c", shuffle_names=False)
    assert ordered[0].name == "IM000001.dcm"


def test_uids_reused(tmp_path, phantom):
    paths = write_dicom_series(phantom.volume, tmp_path, study_uid="1.2.3", series_uid="1.2.3.4")
    d = pydicom.dcmread(paths[0])
    assert d.StudyInstanceUID == "1.2.3" and d.SeriesInstanceUID == "1.2.3.4"


def test_missing_encoder_and_unknown_syntax(tmp_path, phantom):
    with pytest.raises(MissingEncoderError, match="jpeg-lossless"):
        write_dicom_series(phantom.volume, tmp_path, transfer_syntax="jpeg-lossless")
    assert issubclass(MissingEncoderError, CovidCTError)
    with pytest.raises(UnknownNameError, match="rle"):
        write_dicom_series(phantom.volume, tmp_path, transfer_syntax="rle2")


def test_stored_values_clip():
    stored = hu_to_stored(np.array([-3000.0, -1024.4, 0.0, 3071.0, 5000.0]))
    assert stored.dtype == np.uint16 and stored.tolist() == [0, 0, 1024, 4095, 4095]


def test_read_back_with_covidct_reader(tmp_path, phantom):
    from covidct.io import read_volume

    write_dicom_series(phantom.volume, tmp_path, transfer_syntax="rle")
    vol = read_volume(tmp_path)
    assert vol.shape == phantom.volume.shape
    assert np.allclose(vol.array, np.clip(np.rint(phantom.volume.array), HU_MIN, HU_MAX))
    assert np.allclose(vol.spacing, phantom.volume.spacing)
