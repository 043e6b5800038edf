"""What a viewer or worklist shows beside the pixels: patient and study labels, slice numbers as a PACS
numbers them, and which patient side each image edge faces.

The DICOM values are read from the slice files (`Volume.meta.files`) without pixel data; text fields are
returned as the plain strings they are (a viewer must show them as text, never as HTML).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from covidct.io.volume import Volume

log = logging.getLogger(__name__)

LPS_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))
"""Patient-side letters of the LPS axes: (towards -axis, towards +axis) for x, y, z."""
NUMBERING_INSTANCE = "InstanceNumber"
NUMBERING_INDEX = "1-based slice index"
HEADER_TAGS = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "SeriesDescription",
               "InstanceNumber")


def edge_letters(direction: np.ndarray) -> dict[str, str]:
    """The patient side the image's left and right edges face (radiological display: patient right
    on the image's left for a standard axial CT). ``direction``: 3x3, columns = LPS direction of the
    array's x, y, z axes."""
    x_axis = np.asarray(direction, dtype=float)[:, 0]
    k = int(np.argmax(np.abs(x_axis)))
    towards_minus, towards_plus = LPS_LETTERS[k]
    right = towards_plus if x_axis[k] > 0 else towards_minus
    left = towards_minus if right == towards_plus else towards_plus
    return {"left": left, "right": right}


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _slice_paths(source: str, files: list[str]) -> list[Path]:
    """The slice files as paths (``meta.files`` may be relative to the source folder)."""
    root = Path(source)
    return [Path(f) if Path(f).is_absolute() or not root.is_dir() else root / f for f in files]


def _read_headers(files: list[Path]) -> list[Any] | None:
    """Headers (no pixels) of each slice file, or None when the files are not all plain DICOM files."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not files or not all(f.is_file() for f in files):
        return None
    try:
        return [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
                for f in files]
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError) as exc:
        log.info("display tags not read (%s)", type(exc).__name__)
        return None


def _instance_numbers(headers: list[Any]) -> list[int] | None:
    numbers = []
    for ds in headers:
        try:
            numbers.append(int(ds.get("InstanceNumber")))
        except (TypeError, ValueError):
            return None
    return numbers if len(set(numbers)) == len(numbers) else None


def display_info(volume: Volume) -> dict[str, Any]:
    """Labels for a viewer: ``patient_id``, ``patient_name``, ``study_date`` (YYYYMMDD as stored),
    ``study_description``, ``series_description``, ``slice_numbers`` (one per slice, z order),
    ``slice_numbering`` (which numbers those are) and ``orientation`` (image edge -> patient side)."""
    meta = volume.meta
    headers = _read_headers(_slice_paths(meta.source, list(meta.files))) if meta.format == "dicom" else None
    first = headers[0] if headers else None
    numbers = _instance_numbers(headers) if headers and len(headers) == volume.num_slices else None

    def tag(name: str) -> str | None:
        return _text(first.get(name)) if first is not None else None

    return {
        "patient_id": _text(meta.patient_id) or tag("PatientID"),
        "patient_name": tag("PatientName"),
        "study_date": tag("StudyDate"),
        "study_description": tag("StudyDescription"),
        "series_description": _text(meta.series_description) or tag("SeriesDescription"),
        "slice_numbers": numbers or list(range(1, volume.num_slices + 1)),
        "slice_numbering": NUMBERING_INSTANCE if numbers else NUMBERING_INDEX,
        "orientation": edge_letters(volume.direction),
    }
