"""A small, independent CT DICOM writer for io tests (real files written with pydicom)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid

INTERCEPT = -1024
SYNTAXES = {"explicit-le": ExplicitVRLittleEndian, "rle": RLELossless, "jpeg-ls": JPEGLSLossless}


def make_hu(shape: tuple[int, int, int] = (12, 32, 40), seed: int = 0) -> np.ndarray:
    """Integer HU volume (z, y, x) in [-1024, 2000], with a per-slice ramp so order is checkable."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 2000, size=shape).astype(np.float32)
    hu[:, 0, 0] = np.arange(shape[0]) * 10 - 1000  # slice k has HU 10k-1000 at (0, 0)
    return hu


def ct_dataset(
    hu_slice: np.ndarray,
    k: int,
    *,
    series_uid: str,
    study_uid: str,
    spacing: tuple[float, float, float],
    z0: float = 0.0,
    modality: str = "CT",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    z: float | None = None,
) -> Dataset:
    """One CT slice as a pydicom Dataset (uncompressed), slice k at patient z = z0 - k * spacing_z."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.PatientID = "TEST-001"
    ds.PatientAge = "050Y"
    ds.PatientSex = "F"
    ds.Manufacturer = "covidct-tests"
    ds.ConvolutionKernel = "B30f"
    ds.SliceThickness = spacing[0]
    ds.InstanceNumber = k + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-10.0, -20.0, z if z is not None else z0 - k * spacing[0]]
    ds.PixelSpacing = [spacing[1], spacing[2]]
    ds.Rows, ds.Columns = hu_slice.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1
    ds.PixelData = (np.round(hu_slice) - INTERCEPT).astype(np.uint16).tobytes()
    return ds


def write_series(
    out_dir: Path,
    hu: np.ndarray,
    *,
    syntax: str = "explicit-le",
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    series_uid: str | None = None,
    modality: str = "CT",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    positions: list[float] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write a (z, y, x) HU array as one file per slice with shuffled names; returns paths in slice order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    names = [f"IM{n}.dcm" for n in range(hu.shape[0])]
    random.Random(seed).shuffle(names)
    paths = []
    for k in range(hu.shape[0]):
        ds = ct_dataset(
            hu[k],
            k,
            series_uid=series_uid,
            study_uid=study_uid,
            spacing=spacing,
            modality=modality,
            image_type=image_type,
            z=None if positions is None else positions[k],
        )
        if syntax != "explicit-le":
            ds.compress(SYNTAXES[syntax])
        path = out_dir / f"s{series_uid[-6:]}_{names[k]}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def dicom_writer() -> Callable[..., list[Path]]:
    return write_series


@pytest.fixture
def hu_volume() -> np.ndarray:
    return make_hu()
