"""Lung regions: the zones (upper / middle / lower third of each lung) and the periphery, computed once
per scan (`LungRegions.of`), and the share of any abnormal mask in them (`LungRegions.quantify`: a
heatmap above a threshold, or the lesions).

Zones follow each lung's own craniocaudal extent, in patient terms: `zone_map` needs to know whether
the array's z axis runs superior -> inferior (the `Volume` contract) or the other way (a series whose
``direction`` says so), and has no default, so no caller can forget it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from covidct.errors import QuantError
from covidct.quant.distance import plane_distance_sq
from covidct.quant.lungs import LEFT_LUNG, LUNG_LABELS, ML_PER_MM3, RIGHT_LUNG, slice_boxes

ZONES = ("upper", "middle", "lower")
PERIPHERAL_FRACTION = 1.0 / 3.0
"""A lung voxel is peripheral when its in-plane distance to the lung boundary is in the outer third
of that lung slice's distance range."""


def zone_map(lung_labels: np.ndarray, *, inferior_first: bool) -> np.ndarray:
    """uint8 (z, y, x): 1/2/3 = upper/middle/lower third of each lung's craniocaudal extent, 0 outside.

    Args:
        lung_labels: (z, y, x) lung labels (1 right, 2 left).
        inferior_first: True when z runs inferior -> superior (`z_runs_inferior_first(volume)`).
    """
    labels = lung_labels[::-1] if inferior_first else lung_labels
    zones = np.zeros(labels.shape, np.uint8)
    for lab in (RIGHT_LUNG, LEFT_LUNG):
        rows = np.flatnonzero((labels == lab).any(axis=(1, 2)))
        if rows.size == 0:
            continue
        edges = np.linspace(rows[0], rows[-1] + 1, len(ZONES) + 1)
        for k in range(len(ZONES)):
            lo, hi = int(round(edges[k])), int(round(edges[k + 1]))
            zones[lo:hi][labels[lo:hi] == lab] = k + 1
    return zones[::-1] if inferior_first else zones


def z_runs_inferior_first(direction: np.ndarray) -> bool:
    """True when the array's z axis points towards patient superior (LPS +z), from a `Volume.direction`."""
    return float(np.asarray(direction, float).reshape(3, 3)[2, 2]) > 0


def peripheral_map(lung_labels: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """bool (z, y, x): lung voxels in the outer `PERIPHERAL_FRACTION` of the in-plane distance range
    (distance to the nearest pixel outside that lung, the other lung included, per slice and lung)."""
    periph = np.zeros(lung_labels.shape, bool)
    for lab in (RIGHT_LUNG, LEFT_LUNG):
        lungs = lung_labels == lab
        for z, box in slice_boxes(lungs).items():  # the distance to the boundary needs the box only
            crop = lungs[z][box]
            dist_sq = plane_distance_sq(crop, pixel_mm, outside_is_background=True)
            periph[z][box] |= crop & (dist_sq <= PERIPHERAL_FRACTION ** 2 * dist_sq.max())
    return periph


@dataclass
class RegionStats:
    """Abnormal share of one lung region: volumes in ml, fraction = abnormal / lung volume there."""

    lung_ml: float
    abnormal_ml: float
    fraction: float


@dataclass
class Quantification:
    """JSON-able share of an abnormal mask in the lung regions (``to_dict``); keys are region names."""

    source: str
    """'heatmap>=T' or 'hu-rule'."""
    total: RegionStats
    per_lung: dict[str, RegionStats]
    per_zone: dict[str, RegionStats]
    central_peripheral: dict[str, RegionStats]
    ggo_ml: float | None = None
    consolidation_ml: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LungRegions:
    """Lung labels, zones and periphery of one scan on one grid (all (z, y, x)).

    Attributes:
        labels: uint8, 1 right / 2 left lung.
        zones: uint8, 1/2/3 upper/middle/lower third of each lung (`zone_map`).
        peripheral: bool, outer third of each lung slice (`peripheral_map`).
        spacing: (z, y, x) mm of the grid.
    """

    labels: np.ndarray
    zones: np.ndarray
    peripheral: np.ndarray
    spacing: tuple[float, float, float]

    @classmethod
    def of(cls, labels: np.ndarray, spacing: tuple[float, float, float], *, inferior_first: bool
           ) -> LungRegions:
        """Zones and periphery of ``labels`` at ``spacing`` (z, y, x) mm."""
        spacing = tuple(float(s) for s in spacing)
        return cls(labels, zone_map(labels, inferior_first=inferior_first),
                   peripheral_map(labels, (spacing[1], spacing[2])), spacing)  # type: ignore[arg-type]

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) * ML_PER_MM3

    def stats(self, abnormal: np.ndarray, region: np.ndarray) -> RegionStats:
        """`RegionStats` of ``abnormal`` inside ``region`` (bool arrays of this grid)."""
        lung_ml = float(np.count_nonzero(region)) * self.voxel_ml
        ab_ml = float(np.count_nonzero(abnormal & region)) * self.voxel_ml
        return RegionStats(round(lung_ml, 3), round(ab_ml, 3), round(ab_ml / lung_ml, 5) if lung_ml else 0.0)

    def quantify(self, abnormal: np.ndarray, source: str) -> Quantification:
        """Share of the bool mask ``abnormal`` (this grid) overall, per lung, per zone (both lungs'
        thirds together) and central vs peripheral.

        Raises:
            QuantError: ``abnormal`` is not on this grid.
        """
        if abnormal.shape != self.labels.shape:
            raise QuantError(
                f"Mask shape {abnormal.shape} differs from the lung regions' {self.labels.shape}.")
        lung = self.labels > 0
        return Quantification(
            source=source,
            total=self.stats(abnormal, lung),
            per_lung={name: self.stats(abnormal, self.labels == lab) for lab, name in LUNG_LABELS.items()},
            per_zone={name: self.stats(abnormal, self.zones == k + 1) for k, name in enumerate(ZONES)},
            central_peripheral={"central": self.stats(abnormal, lung & ~self.peripheral),
                                "peripheral": self.stats(abnormal, self.peripheral)},
        )
