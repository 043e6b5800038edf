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
hilar rule: voxels within `HILAR_DISTANCE_MM` (in-plane) of the mediastinum (the non-lung between
the two lungs) are never lesion.

The tunables are gathered in `LesionParams`; ``benchmarks/quant_validation.py`` chooses them by
leave-one-series-out on the labelled real series (docs/results.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from covidct.errors import QuantError
from covidct.io.volume import HOUNSFIELD_AIR, Volume
from covidct.quant.bands import CONSOLIDATION_HU, GGO_HU, band_masks
from covidct.quant.distance import plane_distance_sq
from covidct.quant.lungs import bounding_box, label_components

OPENING_BOX_MM = (6.0, 7.0, 7.0)
"""(z, y, x) size of the opening box: structures thinner than this in any axis are not lesions."""
HILAR_DISTANCE_MM = 15.0
"""Dense components mostly within this in-plane distance of the mediastinum are hilar vessels."""
MIN_LESION_ML = 0.1
"""3D lesion components smaller than this are dropped (noise that survived the opening)."""
ML_PER_MM3 = 1e-3
EDGE_RING = np.zeros((3, 3, 3), bool)
EDGE_RING[1] = ndi.generate_binary_structure(2, 1)
EDGE_RINGS = 1
"""In-plane rings of voxels around the opened lesion is added back where its own HU is in the bands:
the opening's minimum filter drops a lesion's edge, where noise dips below -700 HU."""
NODULE_MAX_ML = 0.0
"""3D lesion components of at most this volume whose voxels are mostly in the consolidation band are
solid nodules (or vessel stumps), not pneumonia, and are dropped. 0 = off."""
NODULE_DENSE_SHARE = 0.5
"""'mostly' for `NODULE_MAX_ML`: at least this share of the component's voxels."""
ROUND_NODULE_MIN_ROUNDNESS = 0.6
"""3D lesion components whose equivalent ellipsoid has shortest / longest axis at least this, fill
that ellipsoid to at least `ROUND_NODULE_MIN_FILL`, are at least `ROUND_NODULE_SOLID_SHARE` in the
consolidation band and at most `ROUND_NODULE_MAX_DIAMETER_MM` long are round solid or part-solid
nodules (a solitary compact round opacity: Fleischner glossary), not pneumonia, and are dropped.
0 = off. 0.6 was chosen by every search of benchmarks/quant_validation.py run 4 (both folds and all
series); the other constants were set by looking at all six shared series (docs/results.md, issue 21)."""
ROUND_NODULE_MIN_FILL = 0.8
"""Component volume / volume of its equivalent ellipsoid (1 for a solid ellipsoid; branching vessels
and patchy opacities fill less)."""
ROUND_NODULE_SOLID_SHARE = 0.3
"""A round nodule is at least this share in the consolidation band (a solid core); rounded ground
glass (a feature of COVID-19 pneumonia) is never dropped by this rule."""
ROUND_NODULE_MAX_DIAMETER_MM = 32.0
"""The longest equivalent-ellipsoid diameter (mm) of a round nodule: a nodule is < 3 cm, a mass
larger (Fleischner glossary); 2 mm of slack for the partial-volume edge."""
POSTERIOR_RIM_MM = 0.0
"""Lung voxels within this distance of the lung's posterior edge (along the patient's anterior-posterior
axis) are never lesion: the dependent density of a supine patient. 0 = off."""


@dataclass(frozen=True)
class LesionParams:
    """The tunables of `segment_lesions`. ``benchmarks/quant_validation.py`` searches them leave-one-
    series-out (docs/results.md, issue 21 item 3). The defaults are issue 12's values plus the round
    nodule rule, the one lesion step every search of run 4 chose; the folds' other choices disagree
    with each other and are not adopted. The posterior rim and the small-nodule rule stay off.

    Attributes:
        opening_box_mm: (z, y, x) mm of the grey-opening box.
        hilar_distance_mm: in-plane distance from the mediastinum inside which nothing is lesion (0 = off).
        min_lesion_ml: 3D components smaller than this (ml) are dropped.
        edge_rings: in-plane rings around the opened lesion added back where the raw HU is in a band.
        ggo_hu: ground-glass band [low, high) HU.
        consolidation_hu: consolidation band [low, high] HU.
        posterior_rim_mm: dependent posterior rim excluded (mm along anterior-posterior, 0 = off).
        nodule_max_ml: solid components up to this volume are dropped as nodules (0 = off).
        round_nodule_min_roundness: round solid nodules (`drop_round_nodules`) with at least this
            axis ratio are dropped (0 = off).
    """

    opening_box_mm: tuple[float, float, float] = OPENING_BOX_MM
    hilar_distance_mm: float = HILAR_DISTANCE_MM
    min_lesion_ml: float = MIN_LESION_ML
    edge_rings: int = EDGE_RINGS
    ggo_hu: tuple[float, float] = GGO_HU
    consolidation_hu: tuple[float, float] = CONSOLIDATION_HU
    posterior_rim_mm: float = POSTERIOR_RIM_MM
    nodule_max_ml: float = NODULE_MAX_ML
    round_nodule_min_roundness: float = ROUND_NODULE_MIN_ROUNDNESS


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


def opened_lung_hu(
    hu: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float],
    box_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Grey opening (box ``box_mm``, default `OPENING_BOX_MM`) of the HU inside ``lung``, outside set
    to air: (z, y, x) float32."""
    inside = np.where(lung, hu, np.float32(HOUNSFIELD_AIR)).astype(np.float32, copy=False)
    size = box_size_voxels(spacing, box_mm)
    return ndi.grey_opening(inside, size=size, mode="constant", cval=HOUNSFIELD_AIR)


def mediastinum_distance_mm(lung_labels: np.ndarray, pixel_mm: tuple[float, float],
                            within_mm: float | None = None, slices: np.ndarray | None = None) -> np.ndarray:
    """In-plane distance (mm) to the mediastinum in each slice: (z, y, x) float32, inf in slices without one.

    The mediastinum of a slice is taken as the non-lung pixels that lie, on their row, between the
    first and the last lung pixel (between the lungs, in front of the spine, around the hila).
    With ``within_mm``, only distances up to it are needed: each slice is transformed on the
    mediastinum's box grown by that distance, and pixels outside it (all farther) read inf. With
    ``slices`` ((z,) bool), only those slices are computed; the others read inf.
    """
    lung = lung_labels > 0
    nx = lung.shape[2]
    has_row = lung.any(axis=2)
    first = np.where(has_row, np.argmax(lung, axis=2), nx)
    last = np.where(has_row, nx - 1 - np.argmax(lung[:, :, ::-1], axis=2), -1)
    cols = np.arange(nx)[None, None, :]
    mediastinum = (cols > first[..., None]) & (cols < last[..., None]) & ~lung
    dist = np.full(lung.shape, np.inf, np.float32)
    pad = max(lung.shape[1:]) if within_mm is None else int(np.ceil(within_mm / min(pixel_mm))) + 1
    present = mediastinum.any(axis=(1, 2))
    for z in np.flatnonzero(present if slices is None else present & slices):
        box = bounding_box(mediastinum[z], pad=pad)
        dist[z][box] = np.sqrt(plane_distance_sq(~mediastinum[z][box], pixel_mm))
    return dist


def drop_hilar(mask: np.ndarray, lung_labels: np.ndarray, pixel_mm: tuple[float, float],
               distance_mm: float = HILAR_DISTANCE_MM) -> np.ndarray:
    """Remove the voxels within ``distance_mm`` (in-plane, default `HILAR_DISTANCE_MM`) of the
    mediastinum; 0 keeps every voxel."""
    if distance_mm <= 0:
        return mask
    return mask & (mediastinum_distance_mm(lung_labels, pixel_mm, within_mm=distance_mm) > distance_mm)


def posterior_depth_mm(lung: np.ndarray, step_mm: float, *, posterior_down: bool) -> np.ndarray:
    """(z, y, x) float32: for each lung voxel, the length (mm) of lung from it to the lung's posterior
    edge along its image column (itself included: the edge voxel reads ``step_mm``); 0 outside.

    Args:
        lung: bool (z, y, x).
        step_mm: pixel size along y (mm).
        posterior_down: True when the array's y axis points towards patient posterior (standard axial).
    """
    cols = lung if posterior_down else lung[:, ::-1]
    run = np.zeros(cols.shape, np.float32)
    below = np.zeros((cols.shape[0], cols.shape[2]), np.float32)
    for y in range(cols.shape[1] - 1, -1, -1):
        below = (below + 1.0) * cols[:, y]
        run[:, y] = below
    run *= np.float32(step_mm)
    return run if posterior_down else run[:, ::-1]


def drop_posterior_rim(mask: np.ndarray, lung: np.ndarray, step_mm: float, rim_mm: float, *,
                       posterior_down: bool) -> np.ndarray:
    """Remove the voxels within ``rim_mm`` of the lung's posterior edge (`posterior_depth_mm`);
    0 keeps every voxel."""
    if rim_mm <= 0:
        return mask
    return mask & (posterior_depth_mm(lung, step_mm, posterior_down=posterior_down) > rim_mm)


def y_points_posterior(direction: np.ndarray) -> bool:
    """True when the array's y axis points towards patient posterior (LPS +y), from a `Volume.direction`."""
    return float(np.asarray(direction, float).reshape(3, 3)[1, 1]) >= 0


def grow_in_plane(mask: np.ndarray, rings: int) -> np.ndarray:
    """``mask`` (z, y, x bool) dilated ``rings`` times by the in-plane 4-neighbour cross (`EDGE_RING`),
    by shifted ORs (the same as ``binary_dilation(mask, EDGE_RING, iterations=rings)``)."""
    out = mask.copy()
    for _ in range(rings):
        grown = out.copy()
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[:, :, 1:] |= out[:, :, :-1]
        grown[:, :, :-1] |= out[:, :, 1:]
        out = grown
    return out


@dataclass(frozen=True)
class ComponentRules:
    """Which 3D lesion components `filter_components` drops (each rule 0 = off).

    Attributes:
        min_voxels: components with fewer voxels.
        nodule_max_ml: components of at most this volume (ml) at least `NODULE_DENSE_SHARE` solid.
        round_nodule_min_roundness: round solid nodules (`ROUND_NODULE_*`) with this axis ratio or more.
    """

    min_voxels: int = 1
    nodule_max_ml: float = 0.0
    round_nodule_min_roundness: float = 0.0


def _ellipsoid_of_voxels(flat: np.ndarray, lab: np.ndarray, n: int, shape: tuple[int, ...],
                         spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`ellipsoid_shape` from the labelled voxels' flat indices ``flat`` and their labels ``lab``."""
    coords = np.stack(np.unravel_index(flat, shape), axis=1) * np.asarray(spacing, float)
    count = np.bincount(lab, minlength=n + 1).astype(float)
    safe = np.maximum(count, 1.0)
    mean = np.stack([np.bincount(lab, coords[:, a], n + 1) for a in range(3)], axis=1) / safe[:, None]
    cov = np.empty((n + 1, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            second = np.bincount(lab, coords[:, a] * coords[:, b], n + 1) / safe
            cov[:, a, b] = cov[:, b, a] = second - mean[:, a] * mean[:, b]
    semi = np.sqrt(5.0 * np.clip(np.linalg.eigvalsh(cov), 0.0, None))  # solid ellipsoid: var = a^2 / 5
    volume = 4.0 / 3.0 * np.pi * semi.prod(axis=1)
    valid = (count >= 4) & (semi[:, 0] > 0)
    valid[0] = False
    roundness = np.where(valid, semi[:, 0] / np.maximum(semi[:, 2], 1e-9), 0.0)
    fill = np.where(valid, count * float(np.prod(spacing)) / np.maximum(volume, 1e-9), 0.0)
    return roundness, fill, np.where(valid, 2.0 * semi[:, 2], 0.0)


def ellipsoid_shape(labels: np.ndarray, n: int, spacing: tuple[float, float, float]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label 0..n of a (z, y, x) label image: the equivalent ellipsoid of its voxels (same second
    moments, in mm). Returns (n+1,) arrays: roundness (shortest / longest semi-axis), fill (voxel
    volume / ellipsoid volume) and the longest diameter (mm); 0 for label 0 and for components too
    small or flat to have three axes. Weighted counts over the labelled voxels only."""
    flat = np.flatnonzero(labels)
    return _ellipsoid_of_voxels(flat, labels.ravel()[flat], n, labels.shape, spacing)


def filter_components(mask: np.ndarray, dense: np.ndarray, spacing: tuple[float, float, float],
                      rules: ComponentRules) -> np.ndarray:
    """Drop the 3D components of ``mask`` that a rule of ``rules`` names, from one labelling; every
    statistic is counted over the mask's voxels only. Rules apply to whole components, so applying
    them together is the same as applying them one after the other.

    Args:
        mask, dense: bool (z, y, x); ``dense`` marks the consolidation band.
        spacing: (z, y, x) mm.
        rules: `ComponentRules`.
    """
    labels, n = label_components(mask)
    if n == 0:
        return mask
    flat = np.flatnonzero(mask)
    lab = labels.ravel()[flat]
    sizes = np.bincount(lab, minlength=n + 1)
    drop = sizes < rules.min_voxels
    if rules.nodule_max_ml > 0 or rules.round_nodule_min_roundness > 0:
        solid = np.bincount(lab, dense.ravel()[flat].astype(np.float64), n + 1)
        voxel_ml = float(np.prod(spacing)) * ML_PER_MM3
        if rules.nodule_max_ml > 0:
            drop |= (sizes * voxel_ml <= rules.nodule_max_ml) & (solid >= NODULE_DENSE_SHARE * sizes)
        if rules.round_nodule_min_roundness > 0:
            roundness, fill, diameter = _ellipsoid_of_voxels(flat, lab, n, mask.shape, spacing)
            drop |= ((roundness >= rules.round_nodule_min_roundness) & (fill >= ROUND_NODULE_MIN_FILL)
                     & (diameter <= ROUND_NODULE_MAX_DIAMETER_MM)
                     & (solid >= ROUND_NODULE_SOLID_SHARE * sizes))
    drop[0] = True
    out = np.zeros(mask.shape, bool)
    out.ravel()[flat[~drop[lab]]] = True
    return out


def drop_nodules(mask: np.ndarray, dense: np.ndarray, voxel_ml: float, max_ml: float) -> np.ndarray:
    """Remove the 3D components of ``mask`` of at most ``max_ml`` whose voxels are at least
    `NODULE_DENSE_SHARE` in ``dense`` (the consolidation band): solid nodules; 0 keeps every component.
    (``voxel_ml`` is a cube's volume: the rule needs no axis.)"""
    if max_ml <= 0:
        return mask
    side = (voxel_ml / ML_PER_MM3) ** (1.0 / 3.0)
    return filter_components(mask, dense, (side, side, side), ComponentRules(nodule_max_ml=max_ml))


def drop_round_nodules(mask: np.ndarray, dense: np.ndarray, spacing: tuple[float, float, float],
                       min_roundness: float) -> np.ndarray:
    """Remove the 3D components of ``mask`` that are round solid or part-solid nodules: equivalent
    ellipsoid roundness >= ``min_roundness``, fill >= `ROUND_NODULE_MIN_FILL`, longest diameter <=
    `ROUND_NODULE_MAX_DIAMETER_MM`, at least `ROUND_NODULE_SOLID_SHARE` in ``dense``; 0 keeps all."""
    if min_roundness <= 0:
        return mask
    return filter_components(mask, dense, spacing, ComponentRules(round_nodule_min_roundness=min_roundness))


def lesions_from_opened(
    opened: np.ndarray, hu: np.ndarray, lung_labels: np.ndarray, spacing: tuple[float, float, float],
    params: LesionParams, *, posterior_down: bool, mediastinum_mm: np.ndarray | None = None,
) -> LesionMasks:
    """GGO and consolidation from the opened HU (`opened_lung_hu`) and the raw HU, all (z, y, x) on one
    grid: bands, small components dropped, hila and posterior rim dropped, edge rings added back.
    ``mediastinum_mm`` (`mediastinum_distance_mm` of ``lung_labels``) is computed when not given."""
    lung = lung_labels > 0
    hazy, dense = band_masks(opened, params.ggo_hu, params.consolidation_hu)
    voxel_ml = float(np.prod(spacing)) * ML_PER_MM3
    min_voxels = max(1, int(round(params.min_lesion_ml / voxel_ml)))
    rules = ComponentRules(min_voxels, params.nodule_max_ml, params.round_nodule_min_roundness)
    core = filter_components(hazy | dense, dense, spacing, rules)
    if params.hilar_distance_mm > 0:
        if mediastinum_mm is None:
            mediastinum_mm = mediastinum_distance_mm(lung_labels, (spacing[1], spacing[2]),
                                                     within_mm=params.hilar_distance_mm,
                                                     slices=core.any(axis=(1, 2)))
        core &= mediastinum_mm > params.hilar_distance_mm
    core = drop_posterior_rim(core, lung, spacing[1], params.posterior_rim_mm, posterior_down=posterior_down)
    rim = np.zeros_like(core)
    if params.edge_rings > 0:
        rim = grow_in_plane(core, params.edge_rings) & ~core & lung
    rim_ggo, rim_cons = band_masks(hu, params.ggo_hu, params.consolidation_hu)
    return LesionMasks((core & hazy) | (rim & rim_ggo), (core & dense) | (rim & rim_cons))


def segment_lesions(
    volume: Volume, lung_labels: np.ndarray, params: LesionParams | None = None
) -> LesionMasks:
    """GGO and consolidation inside the lungs, vessels, hila and pleural/diaphragmatic rim removed.

    Args:
        volume: HU `Volume` (z, y, x).
        lung_labels: (z, y, x) uint8 lung labels (> 0 inside the lungs), same shape.
        params: the tunables (default `LesionParams()`).

    Returns:
        `LesionMasks` on the volume's grid.

    Raises:
        QuantError: 8-bit input (no HU) or mismatched shapes.
    """
    params = LesionParams() if params is None else params
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
    box = bounding_box(lung, pad=max(box_size_voxels(spacing, params.opening_box_mm)))
    hu = np.asarray(volume.array[box], np.float32)
    opened = opened_lung_hu(hu, lung[box], spacing, params.opening_box_mm)
    found = lesions_from_opened(opened, hu, lung_labels[box], spacing, params,
                                posterior_down=y_points_posterior(volume.direction))
    ggo[box], cons[box] = found.ggo, found.consolidation
    return LesionMasks(ggo, cons)
