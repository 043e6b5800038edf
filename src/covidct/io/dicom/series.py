"""Series choice: group headers by SeriesInstanceUID, describe each, choose one.

`choose_series` takes the requested SeriesInstanceUID or ranks the series (axial CT, ORIGINAL/PRIMARY,
most slices, ...) and says which others were passed over; `check_modality` and `check_dimensions` refuse
series that cannot be stacked into one CT volume.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from covidct.errors import (
    InconsistentSeriesError,
    MissingPixelDataError,
    ModalityError,
    SeriesSelectionError,
)
from covidct.io.dicom.headers import SliceHeader


@dataclass
class SeriesInfo:
    """One series found under a path (what `list_series` returns)."""

    uid: str
    modality: str
    description: str
    num_slices: int
    orientation: str
    image_type: tuple[str, ...]
    rows: int | None
    columns: int | None
    transfer_syntax: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "modality": self.modality,
            "description": self.description,
            "num_slices": self.num_slices,
            "orientation": self.orientation,
            "image_type": list(self.image_type),
            "rows": self.rows,
            "columns": self.columns,
            "transfer_syntax": self.transfer_syntax,
        }


def orientation_name(normal: np.ndarray | None) -> str:
    """'axial', 'coronal', 'sagittal' from the dominant component of the slice normal (LPS)."""
    if normal is None:
        return "unknown"
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def group_series(headers: list[SliceHeader]) -> dict[str, list[SliceHeader]]:
    """Headers grouped by SeriesInstanceUID (in first-seen order)."""
    groups: dict[str, list[SliceHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    return groups


def describe_series(uid: str, slices: list[SliceHeader]) -> SeriesInfo:
    """Summary of one series from its headers."""
    first = slices[0]
    return SeriesInfo(
        uid=uid,
        modality=first.modality,
        description=first.texts.get("SeriesDescription") or "",
        num_slices=len(slices),
        orientation=orientation_name(first.normal),
        image_type=first.image_type,
        rows=first.rows,
        columns=first.columns,
        transfer_syntax=first.transfer_syntax,
    )


def _series_rank(info: SeriesInfo) -> tuple[int, int, int, int, int]:
    """Sort key (higher is better): image, CT, axial, ORIGINAL/PRIMARY, number of slices."""
    return (
        int(info.rows is not None),
        int(info.modality == "CT"),
        int(info.orientation == "axial"),
        int("ORIGINAL" in info.image_type and "PRIMARY" in info.image_type),
        info.num_slices,
    )


def choose_series(groups: dict[str, list[SliceHeader]], series_uid: str | None) -> tuple[str, list[str]]:
    """Pick a series by rules (CT, axial, ORIGINAL/PRIMARY, most slices) or by ``series_uid``.

    Returns:
        (chosen uid, warnings naming the series that were skipped).

    Raises:
        SeriesSelectionError: ``series_uid`` is not among the series found.
    """
    infos = {uid: describe_series(uid, s) for uid, s in groups.items()}
    if series_uid is not None:
        if series_uid not in infos:
            listing = "; ".join(
                f"{i.uid or '<no uid>'} ({i.modality}, {i.num_slices} slices)" for i in infos.values()
            )
            raise SeriesSelectionError(
                f"Series {series_uid!r} is not in this data. Series found: {listing}. "
                "Run `covidct inspect PATH` or list_series(PATH) to see them."
            )
        chosen = series_uid
        reason = "requested by series_uid"
    else:
        chosen = max(infos, key=lambda u: _series_rank(infos[u]))
        reason = "chosen by rules: CT, axial, ORIGINAL/PRIMARY, most slices"
    warnings = [
        f"skipped series {i.uid or '<no uid>'} ({i.modality}, {i.orientation}, {i.num_slices} slices, "
        f"{i.description!r}, image type {'/'.join(i.image_type)}); read {chosen or '<no uid>'} ({reason})"
        for uid, i in infos.items()
        if uid != chosen
    ]
    return chosen, warnings


def check_modality(slices: list[SliceHeader], allow_modality: bool) -> None:
    """Raise ModalityError when the series is not CT and ``allow_modality`` is False."""
    modality = slices[0].modality
    if modality != "CT" and not allow_modality:
        raise ModalityError(
            f"The series is {modality or 'of unknown modality'}, not CT; covidct models are trained on CT. "
            "Pass allow_modality=True (CLI: --allow-modality) to read it anyway."
        )


def check_dimensions(slices: list[SliceHeader]) -> None:
    """Raise InconsistentSeriesError when slices differ in rows/columns or have no image."""
    no_image = [s.name for s in slices if s.rows is None or s.columns is None]
    if no_image:
        raise MissingPixelDataError(
            f"{len(no_image)} DICOM file(s) have no image (no Rows/Columns), e.g. {no_image[0]}; "
            "they are reports or presentation states, not CT slices. Remove them or pass the image series."
        )
    sizes = Counter((s.rows, s.columns) for s in slices)
    if len(sizes) > 1:
        listing = ", ".join(f"{r}x{c}: {n} slices" for (r, c), n in sizes.most_common())
        odd = next(s.name for s in slices if (s.rows, s.columns) != sizes.most_common(1)[0][0])
        raise InconsistentSeriesError(
            f"Slices of series {slices[0].series_uid or '<no uid>'} differ in size ({listing}; e.g. {odd}); "
            "they cannot be stacked. Remove the odd files or choose another series with --series."
        )
