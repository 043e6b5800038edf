"""Lesion segmentation inside the lungs from Hounsfield units alone (no learned weights).

Ground-glass opacity (GGO) and consolidation are HU bands (`covidct.quant.bands`), but a plain
band also catches what is normal and dense: vessels and airway walls, their partial-volume halo,
the hila, and the partial-volume rim where the lung meets the chest wall and the diaphragm. One
operation removes
all of them: a grey-level **opening** of the HU inside the lung, with everything outside the lung
set to air. An opening with a box of `OPENING_BOX_MM` keeps a value only where a whole box of at
least that value fits inside the lung, so:

- vessels and bronchial walls thinner than the box (and their halo) fall to the surrounding
  parenchyma (~ -850 HU);
- the rim at the pleura and the diaphragm dome is thinner than the box and touches the
  air-filled outside, so it falls too, while a lesion wider than the box keeps its value up to
  the pleura;
- a GGO region keeps its value even where a vessel runs through it (the vessel counts as lesion,
  as a radiologist would draw it).

Vessels wider than the box (central pulmonary arteries and veins at the hila) are removed by a
hilar rule: dense components whose voxels lie mostly within `HILAR_DISTANCE_MM` of the
mediastinum (the non-lung between the two lungs) are vessels, not consolidation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from covidct.errors import QuantError
from covidct.io.volume import HOUNSFIELD_AIR, Volume
from covidct.quant.bands import band_masks

OPENING_BOX_MM = (6.0, 7.0, 7.0)
"""(z, y, x) size of the opening box: structures thinner than this in any axis are not lesions."""
HILAR_DISTANCE_MM = 15.0
"""Dense components mostly within this in-plane distance of the mediastinum are hilar vessels."""
HILAR_SHARE = 0.5
"""... 'mostly' = at least this share of the component's voxels."""
MIN_LESION_ML = 0.1
"""3D lesion components smaller than this are dropped (noise that survived the opening)."""
ML_PER_MM3 = 1e-3
EDGE_RING = np.zeros((3, 3, 3), bool)
EDGE_RING[1] = ndi.generate_binary_structure(2, 1)
EDGE_RINGS = 1
"""In-plane rings of voxels around the opened lesion is added back where its own HU is in the bands:
the opening's minimum filter drops a lesion's edge, where noise dips below -700 HU."""


@dataclass
class LesionMasks:
    """Boolean (z, y, x) masks on the volume's grid; ``ggo`` and ``consolidation`` never overlap."""

    ggo: np.ndarray
    consolidation: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return self.ggo | self.consolidation


def box_size_voxels(
    spacing: tuple[float, float, float], box_mm: tuple[float, float, float] | None = None
) -> tuple[int, int, int]:
    """Box size in voxels per axis (>= 1) closest to ``box_mm`` (z, y, x) mm, default `OPENING_BOX_MM`."""
    box_mm = OPENING_BOX_MM if box_mm is None else box_mm
    size = (max(1, int(round(b / float(s)))) for b, s in zip(box_mm, spacing, strict=True))
    return tuple(size)  # type: ignore[return-value]


def _lung_box(lung: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    """Bounding box of the lung mask grown by ``pad`` voxels (clipped)."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(lung.any(axis=other))
        out.append(slice(max(0, idx[0] - pad), min(lung.shape[axis], idx[-1] + pad + 1)))
    return tuple(out)  # type: ignore[return-value]


def opened_lung_hu(hu: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Grey opening (box `OPENING_BOX_MM`) of the HU inside ``lung``, outside set to air: (z, y, x)."""
    inside = np.where(lung, hu, np.float32(HOUNSFIELD_AIR)).astype(np.float32, copy=False)
    return ndi.grey_opening(inside, size=box_size_voxels(spacing), mode="constant", cval=HOUNSFIELD_AIR)


def _mediastinum_distance_mm(lung_labels: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """In-plane distance (mm) to the mediastinum in each slice: (z, y, x) float, inf in slices without one.

    The mediastinum of a slice is taken as the non-lung pixels that lie, on their row, between the
    first and the last lung pixel (between the lungs, in front of the spine, around the hila).
    """
    lung = lung_labels > 0
    nx = lung.shape[2]
    has_row = lung.any(axis=2)
    first = np.where(has_row, np.argmax(lung, axis=2), nx)
    last = np.where(has_row, nx - 1 - np.argmax(lung[:, :, ::-1], axis=2), -1)
    cols = np.arange(nx)[None, None, :]
    mediastinum = (cols > first[..., None]) & (cols < last[..., None]) & ~lung
    dist = np.full(lung.shape, np.inf, np.float32)
    for z in np.flatnonzero(mediastinum.any(axis=(1, 2))):
        dist[z] = ndi.distance_transform_edt(~mediastinum[z], sampling=pixel_mm)
    return dist


def drop_hilar(mask: np.ndarray, lung_labels: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Remove the voxels within `HILAR_DISTANCE_MM` (in-plane) of the mediastinum."""
    return mask & (_mediastinum_distance_mm(lung_labels, pixel_mm) > HILAR_DISTANCE_MM)


def _drop_small(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Remove 3D components with fewer than ``min_voxels`` voxels."""
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def segment_lesions(volume: Volume, lung_labels: np.ndarray) -> LesionMasks:
    """GGO and consolidation inside the lungs, vessels, hila and pleural/diaphragmatic rim removed.

    Args:
        volume: HU `Volume` (z, y, x).
        lung_labels: (z, y, x) uint8 lung labels (> 0 inside the lungs), same shape.

    Returns:
        `LesionMasks` on the volume's grid.

    Raises:
        QuantError: 8-bit input (no HU) or mismatched shapes.
    """
    if not volume.is_hu:
        raise QuantError(
            "Lesion segmentation needs a volume in Hounsfield units, but this one holds 8-bit grey values "
            f"({volume.meta.source}). Use a DICOM or NIfTI CT instead of PNG/JPG slices."
        )
    if lung_labels.shape != volume.array.shape:
        raise QuantError(
            f"Lung mask shape {lung_labels.shape} differs from the volume's {volume.array.shape}; "
            "segment the same volume with segment_lungs."
        )
    ggo = np.zeros(lung_labels.shape, bool)
    cons = np.zeros(lung_labels.shape, bool)
    lung = lung_labels > 0
    if not lung.any():
        return LesionMasks(ggo, cons)
    spacing = tuple(float(s) for s in volume.spacing)
    box = _lung_box(lung, pad=max(box_size_voxels(spacing)))
    opened = opened_lung_hu(np.asarray(volume.array[box], np.float32), lung[box], spacing)
    pixel_mm = (spacing[1], spacing[2])
    hazy, dense = band_masks(opened)
    min_voxels = max(1, int(round(MIN_LESION_ML / (float(np.prod(spacing)) * ML_PER_MM3))))
    core = drop_hilar(_drop_small(hazy | dense, min_voxels), lung_labels[box], pixel_mm)
    hu = np.asarray(volume.array[box], np.float32)
    rim = ndi.binary_dilation(core, EDGE_RING, iterations=EDGE_RINGS) & ~core & lung[box]
    rim_ggo, rim_cons = band_masks(hu)
    cons[box] = (core & dense) | (rim & rim_cons)
    ggo[box] = (core & hazy) | (rim & rim_ggo)
    return LesionMasks(ggo, cons)
