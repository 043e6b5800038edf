"""Slice ordering: superior -> inferior by position along the slice normal, never by file name.

`order_slices` returns a `SeriesGeometry` (slice order, z spacing, origin, direction) and warnings for
duplicate positions, gaps, unequal spacing and gantry tilt. Not to be confused with
`covidct.preprocessing.geometry.Geometry`, which records how a volume was mapped into model space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from covidct.errors import (
    InvalidHeaderError,
)
from covidct.io.dicom.headers import SliceHeader

GAP_FACTOR = 1.5
"""A step larger than GAP_FACTOR x the median slice spacing is reported as a missing slice."""


DUPLICATE_TOL_MM = 0.01
"""Two slices closer than this along the normal are duplicates."""


UNEQUAL_SPACING_TOL = 0.01
"""Relative spread of slice steps above which spacing is reported as unequal."""


TILT_TOL_DEG = 0.5
"""Angle between the slice-stacking direction and the slice normal reported as gantry tilt."""


@dataclass
class SeriesGeometry:
    """Slice order and geometry of a series."""

    order: list[int]
    spacing_z: float
    origin: tuple[float, float, float]
    direction: np.ndarray
    warnings: list[str]


def _fallback_thickness(header: SliceHeader) -> float:
    """Slice spacing when positions cannot give it: SpacingBetweenSlices, SliceThickness, else 1 mm."""
    for value in (header.spacing_between_slices, header.slice_thickness):
        if value is not None and value > 0:
            return abs(value)
    return 1.0


def order_slices(slices: list[SliceHeader]) -> SeriesGeometry:
    """Order slices superior -> inferior by position along the normal; detect geometry problems.

    Duplicate positions are dropped (first kept) and reported; gaps, unequal spacing and gantry tilt
    are reported in ``warnings``.
    """
    warnings: list[str] = []
    normal = slices[0].normal
    first = slices[0]
    if normal is None or any(s.ipp is None for s in slices):
        warnings.append(
            "ImagePositionPatient/ImageOrientationPatient missing: slices ordered by InstanceNumber"
        )
        order = sorted(range(len(slices)), key=lambda i: slices[i].instance_number or 0)
        iop = slices[0].iop if slices[0].iop and len(slices[0].iop) == 6 else (1, 0, 0, 0, 1, 0)
        direction = np.column_stack([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])]).astype(float)
        ipp = slices[order[0]].ipp or (0.0, 0.0, 0.0)
        return SeriesGeometry(order, _fallback_thickness(first), tuple(ipp), direction, warnings)  # type: ignore[arg-type]

    positions = np.array([s.ipp for s in slices], dtype=float)
    # Superior -> inferior: patient z (LPS, +z superior) decreasing; sagittal/coronal keep +normal.
    step_dir = -normal if normal[2] > 0 else normal
    dist = positions @ step_dir
    if not np.all(np.isfinite(dist)):
        raise InvalidHeaderError(
            f"ImagePositionPatient values of series {first.series_uid or '<no uid>'} are too large to "
            "place the slices (e.g. " + ", ".join(f"{s.name}: {s.ipp}" for s in slices[:2]) + "); "
            "fix the positions or re-export the series."
        )
    order = sorted(range(len(slices)), key=lambda i: (dist[i], slices[i].instance_number or 0))
    order, dup_warnings = _drop_duplicates(order, dist, slices)
    warnings += dup_warnings
    d = dist[order]
    steps = np.diff(d)
    spacing_z = float(np.median(steps)) if steps.size else _fallback_thickness(first)
    warnings += _spacing_warnings(steps, d, spacing_z)
    warnings += _tilt_warnings(positions[order], step_dir, first.gantry_tilt)
    iop = slices[0].iop
    assert iop is not None
    direction = np.column_stack([iop[:3], iop[3:], step_dir]).astype(float)
    origin = tuple(float(v) for v in positions[order[0]])
    return SeriesGeometry(order, spacing_z, origin, direction, warnings)  # type: ignore[arg-type]


def _drop_duplicates(
    order: list[int], dist: np.ndarray, slices: list[SliceHeader]
) -> tuple[list[int], list[str]]:
    kept: list[int] = []
    warnings = []
    for i in order:
        if kept and abs(dist[i] - dist[kept[-1]]) < DUPLICATE_TOL_MM:
            warnings.append(
                f"duplicate slice position {dist[i]:.2f} mm along the normal: kept {slices[kept[-1]].name}, "
                f"dropped {slices[i].name}"
            )
            continue
        kept.append(i)
    return kept, warnings


def _spacing_warnings(steps: np.ndarray, dist: np.ndarray, spacing: float) -> list[str]:
    if steps.size == 0 or not (math.isfinite(spacing) and spacing > 0):
        return []
    warnings = []
    for k in np.flatnonzero(steps > GAP_FACTOR * spacing):
        missing = int(round(steps[k] / spacing)) - 1
        warnings.append(
            f"gap of {steps[k]:.2f} mm between slices {k} and {k + 1} "
            f"(at {dist[k]:.2f} -> {dist[k + 1]:.2f} mm along the stacking direction; "
            f"median spacing {spacing:.2f} mm): about {missing} slice(s) missing"
        )
    spread = float((steps.max() - steps.min()) / spacing)
    if spread > UNEQUAL_SPACING_TOL:
        warnings.append(
            f"unequal slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm "
            f"(median {spacing:.3f} mm used); resample before 3D models"
        )
    return warnings


def _tilt_warnings(positions: np.ndarray, step_dir: np.ndarray, tilt: float | None) -> list[str]:
    warnings = []
    if tilt is not None and abs(tilt) > TILT_TOL_DEG:
        warnings.append(f"gantry tilt {tilt:.1f} degrees (GantryDetectorTilt)")
    if len(positions) >= 2:
        stack = positions[-1] - positions[0]
        norm = float(np.linalg.norm(stack))
        if norm > 0:
            cos = float(np.clip(abs(stack @ step_dir) / norm, -1.0, 1.0))
            angle = float(np.degrees(np.arccos(cos)))
            if angle > TILT_TOL_DEG:
                warnings.append(
                    f"slices are stacked {angle:.1f} degrees off the slice normal (gantry tilt or sheared "
                    "series); the volume is not rectilinear"
                )
    return warnings
