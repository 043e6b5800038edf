"""Lung segmentation by thresholding and component analysis (no learned weights).

Labels: 0 background, 1 right lung, 2 left lung. Patient right is image left (DICOM display,
x increasing towards patient left), so the lung whose centroid has the smaller x is the right lung.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import clear_border

from covidct.errors import ExplainError
from covidct.io.volume import Volume

BACKGROUND, RIGHT_LUNG, LEFT_LUNG = 0, 1, 2
LUNG_LABELS = {RIGHT_LUNG: "right", LEFT_LUNG: "left"}
AIR_THRESHOLD_HU = -320.0
"""Voxels below this are air or aerated lung."""
AIRWAY_MAX_AREA_MM2 = 700.0
"""2D air components at most this large (trachea ~2-3 cm^2, main bronchi smaller) ..."""
AIRWAY_CENTRAL_BAND = 0.12
"""... whose centroid lies within this fraction of the body width of the body's x-centre are airways."""
MIN_COMPONENT_ML = 5.0
"""3D air components smaller than this (bowel gas, noise) are never lungs."""
MERGED_RATIO = 0.25
"""If the second-largest component is below this fraction of the largest, the lungs touch: split them."""
SPLIT_BAND = (0.3, 0.7)
"""When splitting merged lungs, search the thinnest column within this fraction of the lung's x-extent."""
ML_PER_MM3 = 1e-3
CLOSING_RADIUS_MM = 10.0
"""Per-slice closing radius per lung: recovers dense lesions (consolidation) on the lung surface."""


def _air_mask(volume: Volume) -> np.ndarray:
    """Boolean (z, y, x) of air/aerated-lung voxels: HU < -320, or below Otsu for 8-bit slices."""
    arr = volume.array
    if volume.is_hu:
        return arr < AIR_THRESHOLD_HU
    return np.stack([s < threshold_otsu(s) if np.ptp(s) > 0 else np.zeros_like(s, bool) for s in arr])


def _inside_air(air: np.ndarray) -> np.ndarray:
    """Remove, slice by slice, air connected to the image border (outside the body, under the table)."""
    return np.stack([clear_border(s) for s in air])


def _body_center_width(air_slice: np.ndarray) -> tuple[float, float]:
    """x-centre and width (px) of the body (non-air, filled) in one slice."""
    body = ndi.binary_fill_holes(~air_slice)
    cols = np.flatnonzero(body.any(axis=0))
    if cols.size == 0:
        return air_slice.shape[1] / 2.0, float(air_slice.shape[1])
    return (cols[0] + cols[-1]) / 2.0, float(cols[-1] - cols[0] + 1)


def _remove_airways(inside: np.ndarray, air: np.ndarray, pixel_area_mm2: float) -> np.ndarray:
    """Drop small, central 2D components (trachea, main bronchi) slice by slice."""
    out = inside.copy()
    max_px = AIRWAY_MAX_AREA_MM2 / pixel_area_mm2
    for z in range(inside.shape[0]):
        labels, n = ndi.label(inside[z])
        if n == 0:
            continue
        centre, width = _body_center_width(air[z])
        index = np.arange(1, n + 1)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        cx = ndi.sum_labels(np.broadcast_to(np.arange(labels.shape[1]), labels.shape), labels, index) / sizes
        airway = index[(sizes <= max_px) & (np.abs(cx - centre) <= AIRWAY_CENTRAL_BAND * width)]
        if airway.size:
            out[z][np.isin(labels, airway)] = False
    return out


def _largest_components(mask: np.ndarray, voxel_ml: float) -> list[np.ndarray]:
    """Boolean masks of the (up to) two largest 3D components above `MIN_COMPONENT_ML`, largest first."""
    labels, n = ndi.label(mask)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:2]
    return [labels == (i + 1) for i in order if sizes[i] * voxel_ml >= MIN_COMPONENT_ML]


def _split_merged(lung: np.ndarray) -> np.ndarray:
    """Label one merged lung component 1/2 by the thinnest column near the middle of each slice."""
    out = np.zeros(lung.shape, np.uint8)
    cols_all = np.flatnonzero(lung.any(axis=(0, 1)))
    x0, x1 = cols_all[0], cols_all[-1]
    default_cut = (x0 + x1) / 2.0
    lo, hi = int(x0 + SPLIT_BAND[0] * (x1 - x0)), int(x0 + SPLIT_BAND[1] * (x1 - x0)) + 1
    xs = np.arange(lung.shape[2])
    for z in range(lung.shape[0]):
        if not lung[z].any():
            continue
        profile = lung[z][:, lo:hi].sum(axis=0)
        cut = lo + int(np.argmin(profile)) if profile.size else default_cut
        out[z][lung[z] & (xs[None, :] < cut)] = RIGHT_LUNG
        out[z][lung[z] & (xs[None, :] >= cut)] = LEFT_LUNG
    return out


def _closing_mm(mask: np.ndarray, radius_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Binary closing of a 2D mask with a disk of ``radius_mm`` via two Euclidean distance transforms."""
    pad = int(np.ceil(radius_mm / min(pixel_mm))) + 1
    padded = np.pad(mask, pad)
    dilated = ndi.distance_transform_edt(~padded, sampling=pixel_mm) <= radius_mm
    closed = ndi.distance_transform_edt(dilated, sampling=pixel_mm) > radius_mm
    return closed[pad:-pad, pad:-pad]


def _close_and_fill(labels: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Close (radius `CLOSING_RADIUS_MM`) and fill holes (vessels, lesions) in each lung, slice by slice,
    without overwriting the other lung."""
    out = labels.copy()
    for lab in (RIGHT_LUNG, LEFT_LUNG):
        for z in range(labels.shape[0]):
            lung = labels[z] == lab
            if not lung.any():
                continue
            ys, xs = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
            box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
            closed = _closing_mm(lung[box], CLOSING_RADIUS_MM, pixel_mm)
            filled = np.zeros_like(lung)
            filled[box] = ndi.binary_fill_holes(closed | lung[box])
            out[z][filled & (out[z] == BACKGROUND)] = lab
    return out


def segment_lungs(volume: Volume) -> np.ndarray:
    """Segment the lungs of a chest CT.

    Args:
        volume: a `Volume` (z, y, x); HU expected (8-bit slices fall back to Otsu thresholds).

    Returns:
        uint8 (z, y, x): 0 background, 1 right lung (image left), 2 left lung (image right).

    Raises:
        ExplainError: no lung-sized air region inside the body.
    """
    arr = np.asarray(volume.array)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ExplainError(f"segment_lungs needs a (z, y, x) volume, got shape {arr.shape}.")
    sz, sy, sx = (float(s) for s in volume.spacing)
    air = _air_mask(volume)
    inside = _remove_airways(_inside_air(air), air, sy * sx)
    comps = _largest_components(inside, sz * sy * sx * ML_PER_MM3)
    if not comps:
        raise ExplainError(
            f"No lung found in the volume from {volume.meta.source}: no air region of at least "
            f"{MIN_COMPONENT_ML} ml inside the body below {AIR_THRESHOLD_HU} HU. Check that this is a "
            "chest CT in Hounsfield units with the whole thorax in the field of view."
        )
    if len(comps) == 1 or comps[1].sum() < MERGED_RATIO * comps[0].sum():
        labels = _split_merged(comps[0])
    else:
        labels = np.zeros(arr.shape, np.uint8)
        cx = [np.flatnonzero(c.any(axis=(0, 1))).mean() for c in comps]
        right, left = (0, 1) if cx[0] < cx[1] else (1, 0)
        labels[comps[right]] = RIGHT_LUNG
        labels[comps[left]] = LEFT_LUNG
    return _close_and_fill(labels, (sy, sx))


def lung_volume_ml(mask: np.ndarray, spacing: tuple[float, float, float], label: int | None = None) -> float:
    """Volume in ml of ``mask > 0`` (or of ``mask == label``) for voxel ``spacing`` (z, y, x) mm."""
    voxels = int(np.count_nonzero(mask == label if label is not None else mask > 0))
    return voxels * float(np.prod(spacing)) * ML_PER_MM3
