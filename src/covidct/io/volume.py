"""The `Volume`: what every reader returns and everything downstream consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covidct.errors import CorruptFileError

HOUNSFIELD_AIR = -1000.0
HOUNSFIELD_WATER = 0.0
NONFINITE_FILL_HU = -1024.0
"""Value given to NaN / +-inf voxels of a HU volume (air, like DICOM padding); 8-bit volumes get 0."""


@dataclass
class VolumeMetadata:
    """Facts about where a volume came from. Every field is optional except ``source``."""

    source: str
    """Path the volume was read from (folder, zip, file)."""
    format: str = "unknown"
    """'dicom', 'nifti', 'image' (PNG/JPG) or 'synthetic'."""
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uids: list[str] = field(default_factory=list)
    """SOPInstanceUID per slice, in slice order (DICOM only)."""
    modality: str | None = None
    manufacturer: str | None = None
    kernel: str | None = None
    """ConvolutionKernel."""
    slice_thickness_mm: float | None = None
    patient_id: str | None = None
    patient_age: str | None = None
    patient_sex: str | None = None
    series_description: str | None = None
    files: list[str] = field(default_factory=list)
    """Source file of every slice, in slice order (superior to inferior)."""
    warnings: list[str] = field(default_factory=list)
    """Problems found while reading (gaps, duplicates, tilt, other series skipped...)."""
    extra: dict[str, Any] = field(default_factory=dict)
    headers: list[Any] = field(default_factory=list, repr=False, compare=False)
    """DICOM only: the header (pydicom ``Dataset``, no pixel data) of every slice, in slice order, as
    the reader parsed it, so a DICOM SEG or SR can reference the source without reading it again.
    Not part of any JSON result."""


@dataclass
class Volume:
    """A CT volume ordered (z, y, x), z running superior to inferior.

    Attributes:
        array: float32 array (z, y, x). Hounsfield units when ``is_hu`` is True, else 8-bit
            windowed grey values in [0, 255] (PNG/JPG slices, screenshots).
        spacing: voxel size in mm as (z, y, x).
        origin: patient-space (LPS, mm) position of voxel (0, 0, 0), as (x, y, z).
        direction: 3x3 matrix whose columns are the patient-space directions of the
            array's x, y and z axes (DICOM/LPS convention).
        is_hu: whether ``array`` holds HU.
        meta: where it came from (see `VolumeMetadata`).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    is_hu: bool = True
    meta: VolumeMetadata = field(default_factory=lambda: VolumeMetadata(source="<memory>"))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def num_slices(self) -> int:
        return int(self.array.shape[0])

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what `covidct inspect --json` prints)."""
        arr = self.array
        return {
            "source": self.meta.source,
            "format": self.meta.format,
            "num_slices": self.num_slices,
            "shape": list(self.shape),
            "spacing_mm": [round(float(s), 4) for s in self.spacing],
            "origin_mm": [round(float(o), 4) for o in self.origin],
            "hu_range": [float(arr.min()), float(arr.max())] if arr.size else [None, None],
            "is_hu": self.is_hu,
            "study_uid": self.meta.study_uid,
            "series_uid": self.meta.series_uid,
            "modality": self.meta.modality,
            "manufacturer": self.meta.manufacturer,
            "kernel": self.meta.kernel,
            "slice_thickness_mm": self.meta.slice_thickness_mm,
            "patient_age": self.meta.patient_age,
            "patient_sex": self.meta.patient_sex,
            "files": list(self.meta.files),
            "warnings": list(self.meta.warnings),
        }


def _finite_tuple(
    values: Any, n: int, what: str, source: str, *, positive: bool = False
) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in np.asarray(values, dtype=float).reshape(-1))
    except (TypeError, ValueError):
        out = ()
    bad = len(out) != n or not all(np.isfinite(out)) or (positive and not all(v > 0 for v in out))
    if bad:
        need = f"{n} finite{' positive' if positive else ''} numbers"
        raise CorruptFileError(
            f"{source}: {what} is {values!r}; expected {need}. The file's geometry is damaged; "
            "fix the header (spacing/position/orientation) or re-export the data."
        )
    return out


def validate_volume(volume: Volume) -> Volume:
    """Check a volume at a reader's exit: the one place where sanity is enforced.

    Refuses (CorruptFileError) an empty or non-3D array, spacing that is not 3 finite positive numbers,
    an origin or direction that is not finite. Non-finite voxels (NaN, +-inf) are *replaced* (documented
    choice: a few NaN voxels outside the field of view are common in exported NIfTI) by
    `NONFINITE_FILL_HU` for HU volumes or 0 for 8-bit ones, and the count is added to ``meta.warnings``.

    Returns:
        The same volume (array made float32 and fixed in place when needed).
    """
    source = volume.meta.source
    arr = volume.array
    if arr.ndim != 3 or arr.size == 0:
        raise CorruptFileError(
            f"{source}: the volume has shape {tuple(arr.shape)}; expected a non-empty 3D (z, y, x) array. "
            "The file holds no usable image; check it or re-export it."
        )
    volume.spacing = _finite_tuple(volume.spacing, 3, "voxel spacing (mm)", source, positive=True)  # type: ignore[assignment]
    volume.origin = _finite_tuple(volume.origin, 3, "origin (mm)", source)  # type: ignore[assignment]
    direction = np.asarray(_finite_tuple(volume.direction, 9, "direction matrix", source)).reshape(3, 3)
    volume.direction = direction
    if arr.dtype != np.float32:
        volume.array = arr = arr.astype(np.float32)
    if not np.isfinite(arr.sum(dtype=np.float64)):
        bad = ~np.isfinite(arr)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            fill = NONFINITE_FILL_HU if volume.is_hu else 0.0
            arr[bad] = fill
            volume.meta.warnings.append(
                f"{n_bad} voxel(s) were NaN or infinite ({100 * n_bad / arr.size:.2f}% of the volume); "
                f"set to {fill:g}"
            )
    return volume
