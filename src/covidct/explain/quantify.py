"""Quantify abnormal lung: fraction of lung volume, per lung, per zone, central vs peripheral.

Abnormal voxels come from a heatmap (``heatmap >= threshold``) or from the HU rule of
`covidct.explain.lesions` (ground glass -700..-300 HU, consolidation -300..+100 HU, with vessels,
hila and the pleural rim removed) inside the lung mask. `describe` turns the numbers into
words ('bilateral, peripheral, lower-zone predominant') only when the numbers pass the named
thresholds below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from covidct.errors import ExplainError
from covidct.explain.lesions import segment_lesions
from covidct.explain.lungs import LEFT_LUNG, LUNG_LABELS, RIGHT_LUNG, lung_volume_ml
from covidct.explain.severity import ZONES, predominant, zone_map
from covidct.io.volume import Volume

HEATMAP_THRESHOLD = 0.5
"""Default heat level in [0, 1] above which a voxel counts as flagged by a heatmap."""
PERIPHERAL_FRACTION = 1.0 / 3.0
"""A lung voxel is peripheral when its in-plane distance to the lung boundary is in the outer third
of that lung slice's distance range."""
INVOLVED_FRACTION = 0.01
"""A lung is 'involved' when at least 1 % of its volume is abnormal."""
MIN_ABNORMAL_FRACTION = 0.01
"""Below 1 % of total lung volume, `describe` says no relevant abnormality."""


@dataclass
class RegionStats:
    """Abnormal share of one lung region: volumes in ml, fraction = abnormal / lung volume there."""

    lung_ml: float
    abnormal_ml: float
    fraction: float


@dataclass
class Quantification:
    """JSON-able result of `quantify_abnormality` (``to_dict``). Keys of the dicts are region names."""

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


def _disk(ry: float, rx: float) -> np.ndarray:
    """Elliptical 2D structuring element with radii (ry, rx) pixels (at least 1)."""
    ry, rx = max(1.0, ry), max(1.0, rx)
    iy, ix = int(ry), int(rx)
    yy, xx = np.mgrid[-iy : iy + 1, -ix : ix + 1]
    return (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0


def hu_rule_mask(volume: Volume, lung_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ggo, consolidation) boolean (z, y, x) masks inside the lungs by the HU rule of
    `covidct.explain.lesions` (vessels, hila and the pleural rim removed)."""
    masks = segment_lesions(volume, lung_labels)
    return masks.ggo, masks.consolidation


def _bbox(mask2d: np.ndarray, pad: int) -> tuple[slice, slice]:
    """Bounding box of a non-empty 2D mask, grown by ``pad`` pixels and clipped to the image."""
    rows, cols = np.flatnonzero(mask2d.any(axis=1)), np.flatnonzero(mask2d.any(axis=0))
    h, w = mask2d.shape
    return (slice(max(0, rows[0] - pad), min(h, rows[-1] + pad + 1)),
            slice(max(0, cols[0] - pad), min(w, cols[-1] + pad + 1)))


def peripheral_map(lung_labels: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """bool (z, y, x): lung voxels in the outer `PERIPHERAL_FRACTION` of the in-plane distance range."""
    periph = np.zeros(lung_labels.shape, bool)
    for z in range(lung_labels.shape[0]):
        for lab in (RIGHT_LUNG, LEFT_LUNG):
            lung = lung_labels[z] == lab
            if not lung.any():
                continue
            box = _bbox(lung, 1)  # the distance to the lung boundary only needs the lung's box
            crop = lung[box]
            dist = ndi.distance_transform_edt(np.pad(crop, 1), sampling=pixel_mm)[1:-1, 1:-1]
            periph[z][box] |= crop & (dist <= PERIPHERAL_FRACTION * dist[crop].max())
    return periph


def _stats(abnormal: np.ndarray, region: np.ndarray, voxel_ml: float) -> RegionStats:
    lung_ml = float(np.count_nonzero(region)) * voxel_ml
    ab_ml = float(np.count_nonzero(abnormal & region)) * voxel_ml
    return RegionStats(round(lung_ml, 3), round(ab_ml, 3), round(ab_ml / lung_ml, 5) if lung_ml else 0.0)


def quantify_abnormality(
    volume: Volume,
    lung_labels: np.ndarray,
    heatmap: np.ndarray | None = None,
    *,
    threshold: float = HEATMAP_THRESHOLD,
    periph: np.ndarray | None = None,
) -> Quantification:
    """Abnormal fraction of lung volume, overall, per lung, per zone and central vs peripheral.

    Args:
        volume: the `Volume` (z, y, x); spacing gives ml.
        lung_labels: (z, y, x) uint8 from `segment_lungs` (1 right, 2 left).
        heatmap: optional (z, y, x) float in [0, 1]; voxels >= ``threshold`` are abnormal. Without
            it the HU rule is used (needs HU).
        threshold: heat level for ``heatmap``.
        periph: `peripheral_map` of ``lung_labels`` when the caller already has it (computed here
            otherwise).
    """
    if lung_labels.shape != volume.array.shape:
        raise ExplainError(
            f"Lung mask shape {lung_labels.shape} differs from the volume's {volume.array.shape}; "
            "segment the same volume with segment_lungs."
        )
    if not np.any(lung_labels):
        raise ExplainError("The lung mask is empty: nothing to quantify. Check segment_lungs on this volume.")
    voxel_ml = lung_volume_ml(np.ones((1, 1, 1)), volume.spacing)
    lung = lung_labels > 0
    ggo_ml = cons_ml = None
    if heatmap is not None:
        if heatmap.shape != lung.shape:
            raise ExplainError(f"Heatmap shape {heatmap.shape} differs from the volume's {lung.shape}.")
        abnormal = lung & (np.asarray(heatmap) >= threshold)
        source = f"heatmap>={threshold:g}"
    else:
        ggo, cons = hu_rule_mask(volume, lung_labels)
        abnormal = ggo | cons
        ggo_ml = round(float(ggo.sum()) * voxel_ml, 3)
        cons_ml = round(float(cons.sum()) * voxel_ml, 3)
        source = "hu-rule"
    zones = zone_map(lung_labels)
    if periph is None:
        periph = peripheral_map(lung_labels, (float(volume.spacing[1]), float(volume.spacing[2])))
    return Quantification(
        source=source,
        total=_stats(abnormal, lung, voxel_ml),
        per_lung={name: _stats(abnormal, lung_labels == lab, voxel_ml) for lab, name in LUNG_LABELS.items()},
        per_zone={name: _stats(abnormal, zones == k + 1, voxel_ml) for k, name in enumerate(ZONES)},
        central_peripheral={
            "central": _stats(abnormal, lung & ~periph, voxel_ml),
            "peripheral": _stats(abnormal, periph, voxel_ml),
        },
        ggo_ml=ggo_ml,
        consolidation_ml=cons_ml,
    )


def describe(quant: Quantification) -> str:
    """Plain words for a `Quantification`, each claim backed by the named thresholds of this module."""
    if quant.total.fraction < MIN_ABNORMAL_FRACTION:
        return f"no relevant abnormality (<{MIN_ABNORMAL_FRACTION:.1%} of lung volume)"
    involved = [n for n, s in quant.per_lung.items() if s.fraction >= INVOLVED_FRACTION]
    words = []
    if len(involved) == 2:
        words.append("bilateral")
    elif len(involved) == 1:
        words.append(f"unilateral ({involved[0]})")
    else:
        words.append(f"scattered (no lung >= {INVOLVED_FRACTION:.0%} involved)")
    region = predominant({k: s.fraction for k, s in quant.central_peripheral.items()})
    if region:
        words.append(region)
    zone = predominant({k: s.fraction for k, s in quant.per_zone.items()})
    if zone:
        words.append(f"{zone}-zone predominant")
    return f"{', '.join(words)}; {quant.total.fraction:.1%} of lung volume abnormal"
