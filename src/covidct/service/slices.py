"""Slice numbers as a radiologist finds them in PACS: the DICOM InstanceNumber, else 1-based position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydicom import Dataset

INSTANCE_NUMBER, POSITION = "InstanceNumber", "position"
NOTES = {
    INSTANCE_NUMBER: "Slice numbers are the DICOM InstanceNumber, as PACS viewers show them.",
    POSITION: "Slice numbers are 1-based positions from the top (superior end) of the scan",
}


def slice_numbering(num_slices: int, headers: Sequence[Dataset] | None) -> dict[str, Any]:
    """``{"kind", "numbers", "note"}``: one number per slice (covidct's slice order, superior first).

    ``headers``: the source instances in slice order. Their InstanceNumber when every slice has one and
    no two are equal; otherwise 1..S, and the note says why.
    """
    numbers = _instance_numbers(headers) if headers is not None and len(headers) == num_slices else None
    if numbers is not None:
        return {"kind": INSTANCE_NUMBER, "numbers": numbers, "note": NOTES[INSTANCE_NUMBER]}
    why = ("the input is not a DICOM series" if headers is None
           else "the series has no usable InstanceNumber (missing or repeated)")
    return {"kind": POSITION, "numbers": list(range(1, num_slices + 1)), "note": f"{NOTES[POSITION]}; {why}."}


def _instance_numbers(headers: Sequence[Dataset]) -> list[int] | None:
    try:
        numbers = [int(ds.InstanceNumber) for ds in headers]
    except (AttributeError, TypeError, ValueError):
        return None
    return numbers if len(set(numbers)) == len(numbers) else None
