"""Write a `Volume` as a realistic CT DICOM series (one file per slice).

Stored values: unsigned 16-bit with 12 bits stored (PixelRepresentation 0, BitsStored 12,
HighBit 11), ``stored = round(HU) + 1024``, RescaleIntercept -1024, RescaleSlope 1, as most CT
scanners write. HU is therefore rounded to integers and clipped to [-1024, 3071]; for the
lossless transfer syntaxes, reading the files back gives exactly ``clip(round(HU), -1024, 3071)``.

Geometry: slice ``k`` lies at ``origin + k * spacing_z * direction[:, 2]`` (LPS, mm); with the
default direction (z column ``(0, 0, -1)``) slices run superior -> inferior, i.e. patient z
decreases with InstanceNumber. ImageOrientationPatient holds the x and y columns of
``volume.direction``; PixelSpacing is (row spacing, column spacing) = (spacing_y, spacing_x).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from covidct.errors import ConfigError, MissingDecoderError
from covidct.io.volume import Volume

RESCALE_INTERCEPT = -1024
RESCALE_SLOPE = 1
BITS_STORED = 12
STORED_MAX = (1 << BITS_STORED) - 1
HU_MIN = RESCALE_INTERCEPT
HU_MAX = STORED_MAX + RESCALE_INTERCEPT  # 3071

DEFAULT_PATIENT_ID = "COVIDCT-SYNTH-0001"
DEFAULT_PATIENT_AGE = "055Y"
DEFAULT_PATIENT_SEX = "O"

TRANSFER_SYNTAXES: dict[str, str] = {
    "explicit-le": ExplicitVRLittleEndian,
    "implicit-le": ImplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
    "jpeg-lossless": JPEGLosslessSV1,
}
"""Names accepted by ``write_dicom_series(transfer_syntax=...)`` -> transfer syntax UID."""

_ENCODER_PACKAGES: dict[str, str] = {
    "rle": "pylibjpeg-rle (or numpy, built into pydicom)",
    "jpeg-ls": "pyjpegls (pip install 'covidct[jpegls]')",
    "jpeg2000": "pylibjpeg-openjpeg",
    "jpeg-lossless": "an encoder pydicom does not have (convert with DCMTK: dcmcjpeg +e1 in out)",
}


class MissingEncoderError(MissingDecoderError):
    """A compressed transfer syntax needs an encoder package that is not installed."""


def _check_syntax(name: str) -> str:
    if name not in TRANSFER_SYNTAXES:
        from covidct.errors import UnknownNameError, unknown_name_message

        raise UnknownNameError(unknown_name_message("transfer syntax", name, list(TRANSFER_SYNTAXES)))
    return TRANSFER_SYNTAXES[name]


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """HU float array -> uint16 stored values (round, clip to [-1024, 3071], add 1024)."""
    return (np.clip(np.rint(hu), HU_MIN, HU_MAX) - RESCALE_INTERCEPT).astype(np.uint16)


def _base_dataset(volume: Volume, uids: dict[str, str], patient: dict[str, str],
                  extra_tags: dict[str, Any] | None) -> Dataset:
    """Tags shared by every slice of the series."""
    meta = volume.meta
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.Modality = patient["modality"]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AccessionNumber = ""
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.PatientBirthDate = ""
    ds.PatientAge = patient["age"]
    ds.PatientSex = patient["sex"]
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = meta.manufacturer or "covidct-synthetic"
    ds.ManufacturerModelName = "phantom"
    ds.ConvolutionKernel = meta.kernel or "STANDARD"
    ds.KVP = 120
    ds.BodyPartExamined = "CHEST"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = meta.series_description or "CT CHEST AXIAL"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    ds.SliceThickness = f"{float(meta.slice_thickness_mm or volume.spacing[0]):.4g}"
    ds.PixelSpacing = [f"{float(volume.spacing[1]):.6g}", f"{float(volume.spacing[2]):.6g}"]
    d = np.asarray(volume.direction, dtype=float)
    ds.ImageOrientationPatient = [f"{x:.6g}" for x in (*d[:, 0], *d[:, 1])]
    ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = str(RESCALE_SLOPE)
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    for key, value in (extra_tags or {}).items():
        setattr(ds, key, value)
    return ds


def _slice_dataset(base: Dataset, volume: Volume, k: int, stored: np.ndarray, syntax: str) -> Dataset:
    """One slice: copy of ``base`` + position, numbers, SOP UID and pixels."""
    ds = base.copy()
    d = np.asarray(volume.direction, dtype=float)
    pos = np.asarray(volume.origin, dtype=float) + k * float(volume.spacing[0]) * d[:, 2]
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [f"{x:.6g}" for x in pos]
    ds.SliceLocation = f"{pos[2]:.6g}"
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = ds.SOPClassUID
    fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = fm
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    if syntax == ImplicitVRLittleEndian:
        fm.TransferSyntaxUID = ImplicitVRLittleEndian
    elif syntax != ExplicitVRLittleEndian:
        _compress(ds, stored, syntax)
    return ds


def _compress(ds: Dataset, stored: np.ndarray, syntax: str) -> None:
    """Compress in place with pydicom's encoders; a missing encoder -> `MissingEncoderError`."""
    name = next(k for k, v in TRANSFER_SYNTAXES.items() if v == syntax)
    try:
        ds.compress(syntax, stored)
    except (RuntimeError, NotImplementedError, ValueError, ImportError) as exc:
        raise MissingEncoderError(
            f"Cannot write transfer syntax {name!r} ({syntax}): {exc}. It needs "
            f"{_ENCODER_PACKAGES.get(name, 'an encoder plugin')}; install it or pick one of "
            "'explicit-le', 'implicit-le', 'rle', 'jpeg-ls', 'jpeg2000'."
        ) from exc


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    *,
    transfer_syntax: str = "explicit-le",
    shuffle_names: bool = True,
    seed: int = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    modality: str = "CT",
    patient_id: str | None = None,
    patient_name: str = "Synthetic^Phantom",
    patient_age: str | None = None,
    patient_sex: str | None = None,
    extra_tags: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``volume`` (HU, z superior -> inferior) as one DICOM file per slice in ``out_dir``.

    Args:
        volume: HU volume (``is_hu`` must be True), array (z, y, x).
        out_dir: folder (created); existing files are left alone.
        transfer_syntax: one of `TRANSFER_SYNTAXES` ('explicit-le', 'implicit-le', 'rle',
            'jpeg-ls', 'jpeg2000', 'jpeg-lossless'); all lossless. 'jpeg-lossless' has no
            encoder in pydicom and raises `MissingEncoderError`.
        shuffle_names: random 16-hex-digit file names (as PACS exports) instead of
            ``IM000001.dcm`` in slice order.
        seed: seeds the file names only (UIDs are always fresh unless given).
        study_uid, series_uid: reuse UIDs (e.g. a second series in the same study).
        patient_id, patient_age, patient_sex: default to ``volume.meta`` and then to
            'COVIDCT-SYNTH-0001', '055Y', 'O'.
        extra_tags: keyword -> value set on every slice (override any default tag).

    Returns:
        Paths written, in slice order (InstanceNumber 1..S).
    """
    syntax = _check_syntax(transfer_syntax)
    if not volume.is_hu:
        raise ConfigError("write_dicom_series needs an HU volume (is_hu=True); 8-bit images are not CT "
                          "Hounsfield data. Write them as PNG instead.")
    if volume.array.ndim != 3 or volume.num_slices == 0:
        raise ConfigError(f"Volume must be 3D (z, y, x) with at least one slice, got shape {volume.shape}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uids = {"study": study_uid or generate_uid(), "series": series_uid or generate_uid(),
            "frame": generate_uid()}
    meta = volume.meta
    patient = {"id": patient_id or meta.patient_id or DEFAULT_PATIENT_ID, "name": patient_name,
               "age": patient_age or meta.patient_age or DEFAULT_PATIENT_AGE,
               "sex": patient_sex or meta.patient_sex or DEFAULT_PATIENT_SEX, "modality": modality}
    base = _base_dataset(volume, uids, patient, extra_tags)
    stored = hu_to_stored(volume.array)
    names = _file_names(volume.num_slices, shuffle_names, seed)
    paths = []
    for k in range(volume.num_slices):
        ds = _slice_dataset(base, volume, k, stored[k], syntax)
        path = out / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _file_names(n: int, shuffle: bool, seed: int) -> list[str]:
    if not shuffle:
        return [f"IM{k + 1:06d}.dcm" for k in range(n)]
    rng = np.random.default_rng(seed)
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.choice(list("0123456789abcdef"), 16)))
    ordered = sorted(names)
    rng.shuffle(ordered)
    return ordered
