"""`read_volume`: one entry point that dispatches on what a path is (DICOM, zip, NIfTI, images)."""

from __future__ import annotations

import os
from pathlib import Path

from covidct.errors import NoDataError
from covidct.io.dicom import SeriesInfo, list_dicom_series, looks_like_dicom, read_dicom
from covidct.io.images import is_image, read_image_volume
from covidct.io.nifti import is_nifti, read_nifti
from covidct.io.volume import Volume


def _folder_kind(folder: Path) -> str:
    """'images' when the folder holds PNG/JPG images directly and no DICOM file beside them, else 'dicom'."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    images = [p for p in files if is_image(p)]
    others = [p for p in files if not is_image(p)]
    if images and not any(p.suffix.lower() == ".dcm" or looks_like_dicom(p) for p in others):
        return "images"
    return "dicom"


def read_volume(
    path: str | os.PathLike[str], *, series_uid: str | None = None, allow_modality: bool = False
) -> Volume:
    """Read a CT volume from a DICOM folder / .zip / file, a NIfTI file, or PNG/JPG slice(s).

    Args:
        path: folder (DICOM searched recursively, or a folder of PNG/JPG slices), .zip of DICOM,
            one DICOM file, .nii / .nii.gz, or one .png/.jpg.
        series_uid: read this SeriesInstanceUID instead of the one chosen by the rules.
        allow_modality: read non-CT DICOM instead of raising ModalityError.

    Returns:
        Volume float32 (z, y, x), z superior -> inferior, spacing (z, y, x) mm.

    Raises:
        NoDataError, CorruptFileError, MissingPixelDataError, ModalityError, SeriesSelectionError,
        InconsistentSeriesError, MissingDecoderError (all from covidct.errors).
    """
    path = Path(path)
    if not path.exists():
        raise NoDataError(
            f"Path {path} does not exist; give a DICOM folder/zip/file, a NIfTI file or images."
        )
    if path.is_dir():
        if _folder_kind(path) == "images":
            return read_image_volume(path)
        return read_dicom(path, series_uid=series_uid, allow_modality=allow_modality)
    if is_nifti(path):
        return read_nifti(path)
    if is_image(path):
        return read_image_volume(path)
    return read_dicom(path, series_uid=series_uid, allow_modality=allow_modality)


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM series under ``path`` (uid, modality, description, slices, orientation, image type).

    The first entry is the one `read_volume` reads by default.
    """
    path = Path(path)
    if not path.exists():
        raise NoDataError(f"Path {path} does not exist.")
    return list_dicom_series(path)
