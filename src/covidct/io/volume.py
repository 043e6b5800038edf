"""The `Volume`: what every reader returns and everything downstream consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

HOUNSFIELD_AIR = -1000.0
HOUNSFIELD_WATER = 0.0


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
