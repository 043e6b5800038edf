"""What a viewer, report or worklist shows beside the pixels: patient and study labels, slice numbers as a
PACS numbers them, and which patient side each image edge faces. The one place for these labels.

Text fields are returned as the plain strings they are (a viewer must show them as text, never as HTML).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from covidct.io.volume import Volume

AXIS_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))
"""Patient-side letters of the LPS axes: (towards -axis, towards +axis) for x, y, z."""
INSTANCE_NUMBER, POSITION = "InstanceNumber", "position"
NUMBERING_NOTES = {
    INSTANCE_NUMBER: "Slice numbers are the DICOM InstanceNumber, as PACS viewers show them.",
    POSITION: "Slice numbers are 1-based positions from the top (superior end) of the scan",
}


def edge_letters(direction: np.ndarray) -> tuple[str, str]:
    """Patient-side letters of an image's (left edge, right edge): its x axis (``direction[:, 0]``, LPS)
    points towards the right edge. (H, W) slices of a standard axial scan give ('R', 'L')."""
    column = np.asarray(direction, float).reshape(3, 3)[:, 0]
    axis = int(np.argmax(np.abs(column)))
    minus, plus = AXIS_LETTERS[axis]
    return (minus, plus) if column[axis] > 0 else (plus, minus)


def slice_numbering(num_slices: int, headers: Sequence[Any] | None) -> dict[str, Any]:
    """``{"kind", "numbers", "note"}``: one number per slice (covidct's slice order, superior first).

    ``headers``: the source instances in slice order. Their InstanceNumber when every slice has one and
    no two are equal; otherwise 1..S, and the note says why.
    """
    numbers = _instance_numbers(headers) if headers is not None and len(headers) == num_slices else None
    if numbers is not None:
        return {"kind": INSTANCE_NUMBER, "numbers": numbers, "note": NUMBERING_NOTES[INSTANCE_NUMBER]}
    why = ("the input is not a DICOM series" if headers is None
           else "the series has no usable InstanceNumber (missing or repeated)")
    return {"kind": POSITION, "numbers": list(range(1, num_slices + 1)),
            "note": f"{NUMBERING_NOTES[POSITION]}; {why}."}


def _instance_numbers(headers: Sequence[Any]) -> list[int] | None:
    try:
        numbers = [int(ds.InstanceNumber) for ds in headers]
    except (AttributeError, TypeError, ValueError):
        return None
    return numbers if len(set(numbers)) == len(numbers) else None


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def source_headers_or_none(volume: Volume) -> list[Any] | None:
    """The source DICOM headers in slice order (`io.masks.volume_source_datasets`), or None when the
    volume was not read from DICOM instances or they cannot be found again."""
    from covidct.errors import CovidCTError
    from covidct.io.masks import volume_source_datasets

    try:
        return volume_source_datasets(volume)
    except (CovidCTError, OSError):
        return None


def display_info(volume: Volume, headers: Sequence[Any] | None = None,
                 numbering: dict[str, Any] | None = None) -> dict[str, Any]:
    """Labels for a viewer: ``patient_id``, ``patient_name``, ``study_date`` (YYYYMMDD as stored),
    ``study_description``, ``series_description``, ``slice_numbers`` (one per slice, z order),
    ``slice_numbering`` (which numbers those are: `INSTANCE_NUMBER` or `POSITION`) and ``orientation``
    (image edge -> patient side).

    ``headers``: the source headers in slice order when the caller has them (read here otherwise);
    ``numbering``: their `slice_numbering` when already computed.
    """
    meta = volume.meta
    if headers is None:
        headers = source_headers_or_none(volume)
    numbering = numbering or slice_numbering(volume.num_slices, headers)
    first = headers[0] if headers else None

    def tag(name: str) -> str | None:
        return _text(first.get(name)) if first is not None else None

    left, right = edge_letters(volume.direction)
    return {
        "patient_id": _text(meta.patient_id) or tag("PatientID"),
        "patient_name": tag("PatientName"),
        "study_date": tag("StudyDate"),
        "study_description": tag("StudyDescription"),
        "series_description": _text(meta.series_description) or tag("SeriesDescription"),
        "slice_numbers": numbering["numbers"],
        "slice_numbering": numbering["kind"],
        "orientation": {"left": left, "right": right},
    }
