"""`read_volume`: one entry point that dispatches on what a path is (DICOM, zip, NIfTI, images).

It is also the one exit every volume passes: special files are refused before anything opens them,
warnings raised while reading (pydicom's conformance warnings, nibabel, PIL) are gathered into
``meta.warnings`` instead of stderr, and `validate_volume` refuses or fixes an insane volume.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from covidct.errors import FileAccessError, NoDataError
from covidct.io.dicom import SeriesInfo, list_dicom_series, looks_like_dicom, read_dicom
from covidct.io.images import is_image, read_image_volume
from covidct.io.limits import ReadLimits, check_not_special, gathered_warnings, is_regular_file
from covidct.io.nifti import is_nifti, read_nifti
from covidct.io.volume import Volume, validate_volume

T = TypeVar("T")
MAX_PATH_IN_MESSAGE = 200
"""Characters of a path shown in an error message (a hostile name may be thousands long)."""
OS_ERROR_ADVICE = {
    errno.ENAMETOOLONG: "a file or folder name is longer than the file system allows; rename it shorter",
    errno.EACCES: "permission denied; make it readable by the user running covidct",
    errno.EPERM: "operation not permitted; make it readable by the user running covidct",
    errno.EIO: "input/output error; the disk or network share failed, copy the study elsewhere and retry",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.ELOOP: "too many symbolic links; give the real path",
}


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` for a message: repr-quoted (control characters escaped), cut to `MAX_PATH_IN_MESSAGE`."""
    text = os.fspath(path)
    text = text if len(text) <= MAX_PATH_IN_MESSAGE else text[: MAX_PATH_IN_MESSAGE - 3] + "..."
    return repr(text)


def file_access_error(exc: OSError, path: str | os.PathLike[str]) -> FileAccessError:
    """A `FileAccessError` for an `OSError` met while reading ``path`` (the failing file when known)."""
    where = exc.filename if exc.filename is not None else path
    advice = OS_ERROR_ADVICE.get(exc.errno or 0, f"{exc.strerror or type(exc).__name__}; check the path")
    return FileAccessError(f"Cannot read {shown_path(where)}: {advice}.")


def translate_os_errors(fn: Callable[[], T], path: str | os.PathLike[str]) -> T:
    """``fn()``, with any `OSError` raised as a `FileAccessError` naming the path."""
    try:
        return fn()
    except OSError as exc:
        raise file_access_error(exc, path) from None


def _require_exists(path: Path, advice: str) -> None:
    """`NoDataError` when ``path`` does not exist; an `OSError` other than "not found" (a file used as
    a folder, a name too long, no permission) propagates for `translate_os_errors`."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise NoDataError(f"Path {shown_path(path)} does not exist; {advice}.") from None


def _folder_kind(folder: Path) -> str:
    """'images' when the folder holds PNG/JPG images directly and no DICOM file beside them, else 'dicom'."""
    files = [p for p in folder.iterdir() if is_regular_file(p) and not p.name.startswith(".")]
    images = [p for p in files if is_image(p)]
    others = [p for p in files if not is_image(p)]
    if images and not any(p.suffix.lower() == ".dcm" or looks_like_dicom(p) for p in others):
        return "images"
    return "dicom"


def _dispatch(path: Path, series_uid: str | None, allow_modality: bool, limits: ReadLimits) -> Volume:
    if path.is_dir():
        if _folder_kind(path) == "images":
            return read_image_volume(path, limits=limits)
        return read_dicom(path, series_uid=series_uid, allow_modality=allow_modality, limits=limits)
    if is_nifti(path):
        return read_nifti(path, limits=limits)
    if is_image(path):
        return read_image_volume(path, limits=limits)
    return read_dicom(path, series_uid=series_uid, allow_modality=allow_modality, limits=limits)


def read_volume(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    allow_modality: bool = False,
    limits: ReadLimits | None = None,
) -> Volume:
    """Read a CT volume from a DICOM folder / .zip / file, a NIfTI file, or PNG/JPG slice(s).

    Args:
        path: folder (DICOM searched recursively, or a folder of PNG/JPG slices), .zip of DICOM,
            one DICOM file, .nii / .nii.gz, or one .png/.jpg.
        series_uid: read this SeriesInstanceUID instead of the one chosen by the rules.
        allow_modality: read non-CT DICOM instead of raising ModalityError.
        limits: memory / disk budgets checked before allocating (default: `ReadLimits.from_env()`,
            i.e. 1 GiB of decoded float32 voxels unless ``COVIDCT_MAX_VOLUME_BYTES`` says otherwise).

    Returns:
        Volume float32 (z, y, x), z superior -> inferior, spacing (z, y, x) mm; finite voxels, spacing
        positive and finite, origin and direction finite (see `validate_volume`).

    Raises:
        CovidCTError subclasses only: NoDataError, CorruptFileError (InvalidHeaderError,
        UnsafeArchiveError), MissingPixelDataError, ModalityError, SeriesSelectionError,
        InconsistentSeriesError, MissingDecoderError, ResourceLimitError, SpecialFileError.
    """
    return translate_os_errors(lambda: _read_volume(Path(path), series_uid, allow_modality, limits), path)


def _read_volume(path: Path, series_uid: str | None, allow_modality: bool,
                 limits: ReadLimits | None) -> Volume:
    check_not_special(path)
    _require_exists(path, "give a DICOM folder/zip/file, a NIfTI file or images")
    limits = limits or ReadLimits.from_env()
    gathered: list[str] = []
    with gathered_warnings(gathered):
        volume = _dispatch(path, series_uid, allow_modality, limits)
    volume.meta.warnings.extend(gathered)
    return validate_volume(volume)


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM series under ``path`` (uid, modality, description, slices, orientation, image type).

    The first entry is the one `read_volume` reads by default. Any `OSError` becomes a `FileAccessError`.
    """
    return translate_os_errors(lambda: _list_series(Path(path)), path)


def _list_series(path: Path) -> list[SeriesInfo]:
    check_not_special(path)
    _require_exists(path, "give a DICOM folder, zip or file")
    with gathered_warnings([]):
        return list_dicom_series(path)
