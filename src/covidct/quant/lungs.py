"""Lung segmentation by thresholding and component analysis (no learned weights).

Labels: 0 background, 1 right lung, 2 left lung. Sides come from the volume's ``direction``
(patient LPS axes of the array): the lung whose centre lies further towards patient left is the
left lung. For standard axial DICOM (x towards patient left) that is radiological display:
image left = patient right.

Slice-wise operations run on the whole stack at once with in-plane structuring elements (one
`scipy.ndimage` call instead of one per slice); `segment_lungs` needs well under a second for a
148-slice 256x256 stack.

Air pockets below the lungs that touch a lung base only through a thin partial-volume bridge through
the diaphragm (colon gas under the left dome, stomach gas) are cut before the components are labelled
(`cut_subphrenic_air`: a 2 mm erosion separates their cores from the lungs'; docs/results.md, issue 21 run 7).

`recover_surface_lesions` (off by default, `RECOVER_RADIUS_MM`) can put back dense lesions that fill bays of
the lung's costal surface; docs/results.md (issue 21, runs 5-6) says why it is off.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from covidct.errors import LungNotFoundError, QuantError
from covidct.io.volume import Volume
from covidct.preprocessing.lung_intensity import CLOSING_RADIUS_MM
from covidct.preprocessing.masks import fill_holes
from covidct.quant.distance import plane_distance_sq

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
DIAPHRAGM_SHARE = 0.5
"""A hole in a lung slice lying more than this share over non-lung in the slice below is the dome."""
MIN_LATERAL_COSINE = 0.5
"""The array's x axis must point at least this much along patient left-right to tell the sides."""
RECOVER_RADIUS_MM = 0.0
"""Radius (mm) of the rolling ball that recovers dense lesions on the lung surface
(`recover_surface_lesions`); 0 = off. Kept off: in runs 5-6 of benchmarks/quant_validation.py it changed the
held-out CAP series' slice AUC by +0.0004 and cost ~0.3 s on P001 (docs/results.md, issue 21); 20 mm is the
radius that was validated."""
RECOVER_GRID_FACTOR = 2
"""The rolling ball's closing runs on a grid this many times coarser in-plane (`surface_candidates`)."""
RECOVER_HU = (-750.0, 100.0)
"""Tissue recovered into the lung lies in the ground-glass / consolidation range (air below, bone above)."""
FAT_HU = (-150.0, -50.0)
"""... and not in the fat range (extrapleural and pericardial fat)."""
RECOVER_MEDIASTINUM_MM = 15.0
"""A bay that comes within this in-plane distance of the mediastinum is not recovered at all: it opens onto
the hilum, whose vessels and bronchi the lung wraps around (the lesion step's `HILAR_DISTANCE_MM`)."""
CORE_DEPTH_MM = 2.0
"""Air whose run along any axis (z, y or x) ends within this distance (in whole voxels, at least one) is
the rim of an air region, not its core (`air_cores`): a partial-volume bridge through the diaphragm (a few
voxels of ~-500 HU between the lung base and colon or stomach gas) has no core, so the cores of lung and
gas are separate components."""
MIN_LUNG_BODY_SHARE = 0.15
"""A chest CT has at least one slice whose lungs cover this share of the body's cross-section. Measured
maximum per series: 0.27-0.60 on the shared chest series (COVID-CT-MD, LIDC-IDRI), 0.02-0.07 on the
two non-chest CTs of misc-ct, where bowel gas passes for 'lung' (docs/results.md, issue 21)."""

IN_PLANE_8 = np.zeros((3, 3, 3), bool)
IN_PLANE_8[1] = True
"""Structuring element: 8-connectivity within a slice, none across slices."""


def label_components(mask: np.ndarray, structure: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """`scipy.ndimage.label` into uint16 labels (half the memory of int32: fewer page faults on a
    full analysis grid), int32 when there are more components than uint16 holds."""
    try:
        return ndi.label(mask, structure, output=np.uint16)
    except RuntimeError:  # insufficient bit depth: more than 65,535 components
        return ndi.label(mask, structure)


def _inside_air_without_airways(air: np.ndarray, body: np.ndarray, pixel_area_mm2: float) -> np.ndarray:
    """The air inside the body (``air & body``: the holes of the body), slice by slice, without the
    airways, from one in-plane labelling of that air: components touching the slice's border are
    dropped, and so are small central ones (trachea, main bronchi: at most `AIRWAY_MAX_AREA_MM2`,
    centroid within `AIRWAY_CENTRAL_BAND` of the body's width from its x-centre)."""
    labels, n = label_components(air & body, IN_PLANE_8)
    if n == 0:
        return np.zeros(air.shape, bool)
    drop = np.zeros(n + 1, bool)
    for face in (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
        drop[face.ravel()] = True
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    cz, cx = _slice_and_x_centre(labels, n)
    centre, width = _body_centre_width(body)
    small = sizes <= AIRWAY_MAX_AREA_MM2 / pixel_area_mm2
    drop |= small & (np.abs(cx - centre[cz]) <= AIRWAY_CENTRAL_BAND * width[cz])
    drop[0] = True
    return ~drop[labels]


def _body_centre_width(body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the x-centre and width (px) of the body (z, y, x bool): two (z,) arrays."""
    cols = body.any(axis=1)  # (z, x)
    nx = body.shape[2]
    has = cols.any(axis=1)
    first = np.where(has, np.argmax(cols, axis=1), 0)
    last = np.where(has, nx - 1 - np.argmax(cols[:, ::-1], axis=1), nx - 1)
    return (first + last) / 2.0, (last - first + 1).astype(float)


def _slice_and_x_centre(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label 0..n of in-plane components (z, y, x): its slice and the x-centre of its box, (n+1,)
    each (from `scipy.ndimage.find_objects`; label 0 reads slice 0, centre 0)."""
    z = np.zeros(n + 1, np.int64)
    centre = np.zeros(n + 1, float)
    for i, obj in enumerate(ndi.find_objects(labels, n), start=1):
        if obj is not None:  # in-plane components lie in one slice
            z[i] = obj[0].start
            centre[i] = (obj[2].start + obj[2].stop - 1) / 2.0
    return z, centre


def core_steps(spacing: tuple[float, float, float]) -> tuple[int, ...]:
    """Voxels per axis (z, y, x) that `air_cores` erodes: ``floor(CORE_DEPTH_MM / spacing)``, at least 1."""
    return tuple(max(1, int(CORE_DEPTH_MM // float(s))) for s in spacing)


def air_cores(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """bool (z, y, x): the voxels of ``mask`` that stay in it `core_steps` voxels both ways along each
    axis: the binary erosion by a 3D cross, one shifted AND per step."""
    mask = np.asarray(mask, bool)
    core = mask.copy()
    for axis, steps in enumerate(core_steps(spacing)):
        for k in range(1, steps + 1):
            ahead = [slice(None)] * 3
            behind = [slice(None)] * 3
            ahead[axis], behind[axis] = slice(k, None), slice(None, -k)
            core[tuple(ahead)] &= mask[tuple(behind)]
            core[tuple(behind)] &= mask[tuple(ahead)]
        edge = [slice(None)] * 3
        edge[axis] = slice(0, steps)
        core[tuple(edge)] = False  # no air known beyond the array: the first and last steps are rim
        edge[axis] = slice(mask.shape[axis] - steps, None)
        core[tuple(edge)] = False
    return core


def _lung_core_ids(sizes: np.ndarray) -> np.ndarray:
    """Labels (1-based) of the lung cores among core components of voxel counts ``sizes`` (index 0 =
    label 1): the largest, and the second when it is at least `MERGED_RATIO` of the largest."""
    order = np.argsort(sizes)[::-1][:2]
    keep = [order[0]] + [i for i in order[1:] if sizes[i] >= MERGED_RATIO * sizes[order[0]]]
    return np.asarray(keep, np.int64) + 1


def _sizes_and_mean_slice(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel count and mean slice index of each label 1..n of a (z, y, x) label array: two (n,) arrays,
    from one bincount per slice."""
    per_slice = np.stack([np.bincount(labels[z].ravel(), minlength=n + 1) for z in range(labels.shape[0])])
    counts = per_slice.sum(axis=0)
    return counts[1:], ((np.arange(labels.shape[0]) @ per_slice) / np.maximum(counts, 1))[1:]


def cut_subphrenic_air(inside: np.ndarray, spacing: tuple[float, float, float], *,
                       inferior_step: int) -> np.ndarray:
    """``inside`` (candidate lung air, bool (z, y, x)) without the gas pockets below the lungs that touch a
    lung base only through a thin bridge (colon gas under the left dome, stomach gas).

    The cores of the air (`air_cores`) are labelled in 3D: the one or two largest are the lungs
    (`_lung_core_ids`). Any other core of at least `MIN_COMPONENT_ML` whose centre lies inferior to the
    lungs' centre is abdominal gas: it is removed from ``inside`` together with its rim (the air within
    as many steps of the core as the erosion took, not entering a lung core). The lung keeps its own thin
    parts (costophrenic recesses), which have no core of their own or a small one.

    Args:
        inside: bool (z, y, x) candidate air (inside the body, airways removed).
        spacing: (z, y, x) voxel size in mm.
        inferior_step: +1 when z + 1 is the inferior slice, -1 otherwise.

    Returns:
        bool (z, y, x): ``inside`` itself when nothing is cut, else a copy with the gas removed.
    """
    if not inside.any():
        return inside
    box = bounding_box(inside)
    crop = inside[box]
    cores, n = label_components(air_cores(crop, spacing))
    if n < 2:
        return inside
    sizes, z_of = _sizes_and_mean_slice(cores, n)
    lungs = _lung_core_ids(sizes)
    is_lung = np.zeros(n + 1, bool)
    is_lung[lungs] = True
    voxel_ml = float(np.prod(spacing)) * ML_PER_MM3
    big = np.flatnonzero((sizes * voxel_ml >= MIN_COMPONENT_ML) & ~is_lung[1:]) + 1
    if big.size == 0:
        return inside
    lung_z = float(np.average(z_of[lungs - 1], weights=sizes[lungs - 1]))
    gas = big[(z_of[big - 1] - lung_z) * inferior_step > 0]
    if gas.size == 0:
        return inside
    rim_steps = max(core_steps(spacing)) + 1
    out = inside.copy()
    region = out[box]
    for lab in gas:
        sub = bounding_box(cores == lab, pad=rim_steps)
        pocket = ndi.binary_dilation(cores[sub] == lab, iterations=rim_steps,
                                     mask=crop[sub] & ~is_lung[cores[sub]])
        region[sub] &= ~pocket
    return out


def _largest_components(mask: np.ndarray, voxel_ml: float) -> tuple[np.ndarray, list[int]]:
    """The (up to) two largest 3D components above `MIN_COMPONENT_ML`: uint8 (z, y, x) labels 1
    (largest) and 2, and their voxel counts. Labelled, counted and looked up on the mask's bounding
    box only (median on P001's candidate air 43 ms instead of 73 ms on the whole array, cap001 65 / 85 ms)."""
    out = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return out, []
    box = bounding_box(mask)
    labels, n = label_components(mask[box])
    sizes = np.bincount(labels.ravel())[1:]
    order = [i for i in np.argsort(sizes)[::-1][:2] if sizes[i] * voxel_ml >= MIN_COMPONENT_ML]
    lut = np.zeros(n + 1, np.uint8)
    for rank, i in enumerate(order, start=1):
        lut[i + 1] = rank
    out[box] = lut[labels]
    return out, [int(sizes[i]) for i in order]


def _split_merged(lung: np.ndarray) -> np.ndarray:
    """Label one merged lung component 1 (image left) / 2 (image right) by the thinnest column near
    the middle of each slice."""
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


def _closing_per_slice(mask: np.ndarray, radius_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """``mask`` (z, y, x bool) joined with the binary closing of each of its slices by a disk of
    ``radius_mm``: two distance transforms (dilate, then erode) on each slice's own bounding box."""
    pad = int(np.ceil(radius_mm / min(pixel_mm))) + 1
    radius_sq = radius_mm * radius_mm
    out = mask.copy()
    for z, box in slice_boxes(mask).items():
        padded = np.pad(mask[z][box], pad)
        dilated = plane_distance_sq(~padded, pixel_mm) <= radius_sq
        closed = plane_distance_sq(dilated, pixel_mm) > radius_sq
        out[z][box] |= closed[pad:-pad, pad:-pad]
    return out


def slice_boxes(mask: np.ndarray, pad: int = 0) -> dict[int, tuple[slice, slice]]:
    """In-plane bounding box of every non-empty slice of a (z, y, x) mask, grown by ``pad`` pixels and
    clipped: {z: (rows, columns)}, from two projections of the whole stack."""
    rows, cols = mask.any(axis=2), mask.any(axis=1)  # (z, y), (z, x)
    ny, nx = mask.shape[1:]
    out = {}
    for z in np.flatnonzero(rows.any(axis=1)):
        y0, y1 = np.argmax(rows[z]), ny - np.argmax(rows[z][::-1])
        x0, x1 = np.argmax(cols[z]), nx - np.argmax(cols[z][::-1])
        out[int(z)] = (slice(max(0, y0 - pad), min(ny, y1 + pad)), slice(max(0, x0 - pad), min(nx, x1 + pad)))
    return out


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask (any ndim), grown by ``pad`` voxels and clipped to the array."""
    out = []
    for axis in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(max(0, idx[0] - pad), min(mask.shape[axis], idx[-1] + pad + 1)))
    return tuple(out)


def _remove_dome(filled: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Drop from ``filled`` the hole components (per slice) that lie mostly (> `DIAPHRAGM_SHARE`)
    over non-lung or dome in the slice below (z + 1 is inferior): the top of the diaphragm dome
    that a slice cuts inside the lung outline. Runs inferior -> superior."""
    labels, n = label_components(holes, IN_PLANE_8)
    hole_slice = np.array([obj[0].start for obj in ndi.find_objects(labels, n)], np.int64)
    out = filled.copy()
    below = np.ones(filled.shape[1:], bool)  # under the lowest slice: all non-lung
    for z in range(filled.shape[0] - 1, -1, -1):
        ids = np.flatnonzero(hole_slice == z) + 1  # in-plane components lie in one slice
        if ids.size:
            share = np.asarray(ndi.mean(below, labels[z], ids))
            dome = np.zeros(n + 1, bool)
            dome[ids[share > DIAPHRAGM_SHARE]] = True
            out[z] &= ~dome[labels[z]]
        below = ~out[z]
    return out


def _close_and_fill(labels: np.ndarray, pixel_mm: tuple[float, float], radius_mm: float) -> np.ndarray:
    """Close (radius ``radius_mm``) and fill holes (vessels, lesions) in each lung, slice by slice,
    without overwriting the other lung; holes that are the diaphragm dome stay outside."""
    out = labels.copy()
    for lab in (RIGHT_LUNG, LEFT_LUNG):
        lung = labels == lab
        if not lung.any():
            continue
        box = bounding_box(lung)
        closed = _closing_per_slice(lung[box], radius_mm, pixel_mm)
        filled = fill_holes(closed)
        filled = _remove_dome(filled, filled & ~closed)
        region = out[box]
        region[filled & (region == BACKGROUND)] = lab
    return out


def between_lungs(labels: np.ndarray) -> np.ndarray:
    """bool (z, y, x): per row, the pixels strictly between the two lungs' medial edges (the last pixel
    of the image-left lung and the first of the image-right lung), on rows that cross both lungs: the
    mediastinum seen from the lungs, hila and lesions against the mediastinum included. Unlike the
    lesion step's mediastinum (`covidct.quant.lesions.mediastinum_distance_mm`: all non-lung between the
    first and last lung pixel), a bay of one lung's outer surface is never part of it."""
    columns = [np.flatnonzero((labels == lab).any(axis=(0, 1))) for lab in (RIGHT_LUNG, LEFT_LUNG)]
    if any(c.size == 0 for c in columns):
        return np.zeros(labels.shape, bool)
    a, b = (RIGHT_LUNG, LEFT_LUNG) if columns[0].mean() < columns[1].mean() else (LEFT_LUNG, RIGHT_LUNG)
    image_left, image_right = labels == a, labels == b
    nx = labels.shape[2]
    both = image_left.any(axis=2) & image_right.any(axis=2)
    medial_left = nx - 1 - np.argmax(image_left[:, :, ::-1], axis=2)
    medial_right = np.argmax(image_right, axis=2)
    cols = np.arange(nx)[None, None, :]
    return both[..., None] & (cols > medial_left[..., None]) & (cols < medial_right[..., None])


def inferior_lung_end(lung: np.ndarray, *, inferior_step: int) -> np.ndarray:
    """int (y, x): the index of the most inferior lung slice of each (y, x) column, -1 (``inferior_step``
    +1) or z (``inferior_step`` -1) where the column has no lung; a slice z has lung below it in its
    column when ``z < end`` (+1) or ``z > end`` (-1).

    Args:
        lung: bool (z, y, x).
        inferior_step: +1 when z + 1 is the inferior neighbour (slices top to bottom), -1 otherwise.
    """
    nz = lung.shape[0]
    end = np.full(lung.shape[1:], -1 if inferior_step > 0 else nz, np.int64)
    order = range(nz) if inferior_step > 0 else range(nz - 1, -1, -1)
    for z in order:  # one slice at a time: contiguous reads, the last lung slice written wins
        end[lung[z]] = z
    return end


def surface_candidates(labels: np.ndarray, lab: int, radius_mm: float,
                       pixel_mm: tuple[float, float]) -> np.ndarray:
    """bool (z, y, x): the bays of lung ``lab``'s outline that a ball of ``radius_mm`` rolled around it
    (per slice) cannot enter: its in-plane closing, less the lung itself, the other lung and the lung's
    holes (those are the diaphragm dome, which `_remove_dome` already kept out).

    The closing runs on a grid `RECOVER_GRID_FACTOR` times coarser in-plane (a pixel there is lung when
    all of its pixels are, so a plain stretch of the outline adds nothing): a ball of 15-30 mm needs
    no 1.4 mm pixels, and the distance transforms see a quarter of the pixels."""
    lung = labels == lab
    out = np.zeros(labels.shape, bool)
    if not lung.any():
        return out
    box = bounding_box(lung)
    f = RECOVER_GRID_FACTOR
    crop = lung[box]
    z, y, x = crop.shape
    padded = np.pad(crop, ((0, 0), (0, -y % f), (0, -x % f)))
    coarse = padded.reshape(z, padded.shape[1] // f, f, padded.shape[2] // f, f).all(axis=(2, 4))
    closed = _closing_per_slice(coarse, radius_mm, (pixel_mm[0] * f, pixel_mm[1] * f))
    closed = np.repeat(np.repeat(closed, f, axis=1), f, axis=2)[:, :y, :x]
    holes = fill_holes(crop) & ~crop
    out[box] = closed & ~holes & (labels[box] == BACKGROUND)
    return out


def recover_surface_lesions(labels: np.ndarray, hu: np.ndarray, pixel_mm: tuple[float, float],
                            radius_mm: float, *, inferior_step: int) -> np.ndarray:
    """Put back into the lung the dense lesions on its outer surface that the air threshold left out.

    A consolidation or dense ground glass against the chest wall fills a bay of the aerated lung's
    outline. Per slice and per lung, a ball of ``radius_mm`` is rolled around the lung (in-plane
    closing, `surface_candidates`): the bays it cannot enter are candidates. A candidate pixel joins
    the lung when all of these hold:

    - its HU is in `RECOVER_HU` (ground glass to consolidation) and not in `FAT_HU` (fat);
    - its bay (in-plane component) comes nowhere within `RECOVER_MEDIASTINUM_MM` of the region between
      the two lungs, their bays filled (`between_lungs` of the closed lungs): a bay that opens onto the
      mediastinum is a hilum, and the heart and great vessels are never pulled in; neither is a lesion
      lying against them (on the mediastinal surface a lesion cannot be told from the heart by HU: both
      are soft tissue, and the lesion step's hilar rule would not count it anyway);
    - the lung continues below it in its (y, x) column (`inferior_lung_end`): the liver and spleen
      domes, which the lung wraps around from above, have no lung under them; a lesion sitting on the
      diaphragm is lost the same way.

    Args:
        labels: uint8 (z, y, x) lung labels (1, 2), not modified.
        hu: (z, y, x) HU, same grid.
        pixel_mm: (y, x) pixel size in mm.
        radius_mm: the ball's radius; 0 returns ``labels`` unchanged.
        inferior_step: +1 when z + 1 is the inferior slice, -1 otherwise.

    Returns:
        uint8 (z, y, x) labels, the recovered pixels given the label of the lung whose bay they fill.
    """
    if radius_mm <= 0 or not labels.any():
        return labels
    closed = labels.copy()
    for lab in (RIGHT_LUNG, LEFT_LUNG):
        closed[surface_candidates(labels, lab, radius_mm, pixel_mm) & (closed == BACKGROUND)] = lab
    bays = closed != labels
    if not bays.any():
        return labels
    z, y, x = np.nonzero(bays)
    near = near_mask(between_lungs(closed), pixel_mm, RECOVER_MEDIASTINUM_MM, slices=np.unique(z))
    bay_id, n = label_components(bays, IN_PLANE_8)
    mediastinal = np.zeros(n + 1, bool)
    mediastinal[bay_id[bays & near]] = True  # a bay that reaches near the mediastinum opens onto it: a hilum
    value = np.asarray(hu[z, y, x], np.float32)
    keep = (value >= RECOVER_HU[0]) & (value <= RECOVER_HU[1]) & ~((value >= FAT_HU[0]) & (value < FAT_HU[1]))
    end = inferior_lung_end(labels > 0, inferior_step=inferior_step)
    keep &= (z < end[y, x]) if inferior_step > 0 else (z > end[y, x])
    keep &= ~mediastinal[bay_id[z, y, x]]
    out = labels.copy()
    out[z[keep], y[keep], x[keep]] = closed[z[keep], y[keep], x[keep]]
    return out


def near_mask(mask: np.ndarray, pixel_mm: tuple[float, float], distance_mm: float,
              slices: np.ndarray | None = None) -> np.ndarray:
    """bool (z, y, x): pixels within ``distance_mm`` (in-plane) of ``mask``, ``mask`` included; each
    slice is transformed on the mask's box grown by that distance; with ``slices`` (indices), only
    those slices are grown (the others are ``mask`` itself)."""
    out = mask.copy()
    pad = int(np.ceil(distance_mm / min(pixel_mm))) + 1
    todo = np.flatnonzero(mask.any(axis=(1, 2)))
    for z in todo if slices is None else np.intersect1d(todo, slices):
        box = bounding_box(mask[z], pad=pad)
        out[z][box] = plane_distance_sq(~mask[z][box], pixel_mm) <= distance_mm * distance_mm
    return out


def patient_left_axis(volume: Volume) -> np.ndarray:
    """Patient-left (LPS +x) component of one voxel step along the array's (z, y, x) axes, in mm.

    Raises:
        QuantError: the volume's x axis does not run left-right (e.g. a sagittal series).
    """
    direction = np.asarray(volume.direction, float).reshape(3, 3)
    steps = direction[0] * np.asarray([volume.spacing[2], volume.spacing[1], volume.spacing[0]], float)
    if abs(direction[0, 0]) < MIN_LATERAL_COSINE:
        raise QuantError(
            f"Cannot tell the right lung from the left in {volume.meta.source}: the image x axis points "
            f"{np.round(direction[:, 0], 2).tolist()} in patient (LPS) space, not left-right. "
            "Quantification per side needs axial slices; reformat the series to axial."
        )
    return steps[::-1]  # (z, y, x) order


def inferior_step_of(direction: np.ndarray) -> int:
    """+1 when the array's z + 1 is the inferior slice (z runs towards patient inferior, LPS -z), else -1,
    from a `Volume.direction`."""
    return -1 if float(np.asarray(direction, float).reshape(3, 3)[2, 2]) > 0 else 1


def _mean_index(mask: np.ndarray) -> np.ndarray:
    """(3,) mean (z, y, x) voxel index of a bool mask, from its three marginal counts; zeros if empty."""
    total = np.count_nonzero(mask)
    if total == 0:
        return np.zeros(3)
    per_z = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
    plane = mask.sum(axis=0, dtype=np.int64)  # (y, x)
    margins = (per_z, plane.sum(axis=1), plane.sum(axis=0))
    return np.array([float(np.arange(m.size) @ m) / total for m in margins])


def _assign_sides(labels: np.ndarray, volume: Volume) -> np.ndarray:
    """Swap labels 1 and 2 when label 1 lies towards patient left (from ``volume.direction``)."""
    step = patient_left_axis(volume)
    centres = [float(step @ _mean_index(labels == lab)) for lab in (RIGHT_LUNG, LEFT_LUNG)]
    if centres[0] > centres[1]:
        swapped = labels.copy()
        swapped[labels == RIGHT_LUNG] = LEFT_LUNG
        swapped[labels == LEFT_LUNG] = RIGHT_LUNG
        return swapped
    return labels


def segment_lungs(volume: Volume, closing_radius_mm: float = CLOSING_RADIUS_MM,
                  recover_radius_mm: float = RECOVER_RADIUS_MM) -> np.ndarray:
    """Segment the lungs of a chest CT.

    Args:
        volume: a `Volume` (z, y, x) in HU (z superior -> inferior, or as ``direction`` says).
        closing_radius_mm: in-plane closing radius that joins dense lesions on the lung surface to
            the lung (default `CLOSING_RADIUS_MM`).
        recover_radius_mm: radius of the rolling ball that recovers dense lesions in bays of the lung
            surface (`recover_surface_lesions`; default `RECOVER_RADIUS_MM`, 0 = off).

    Returns:
        uint8 (z, y, x): 0 background, 1 right lung, 2 left lung (patient sides, from
        ``volume.direction``; image left / image right for standard axial DICOM).

    Raises:
        LungNotFoundError: no lung-sized air region inside the body.
        QuantError: 8-bit input (no HU), no left-right image axis, or not a (z, y, x) volume.
    """
    arr = np.asarray(volume.array)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise QuantError(f"segment_lungs needs a (z, y, x) volume, got shape {arr.shape}.")
    if not volume.is_hu:
        raise QuantError(f"Lung segmentation needs Hounsfield units, but {volume.meta.source} holds 8-bit "
                         "grey values. Give the DICOM series or a NIfTI in HU.")
    sz, sy, sx = (float(s) for s in volume.spacing)
    air = arr < AIR_THRESHOLD_HU
    body = fill_holes(~air)  # non-air with holes (lungs) filled, per slice
    inside = _inside_air_without_airways(air, body, sy * sx)
    inside = cut_subphrenic_air(inside, (sz, sy, sx), inferior_step=inferior_step_of(volume.direction))
    comps, sizes = _largest_components(inside, sz * sy * sx * ML_PER_MM3)
    if not sizes:
        raise LungNotFoundError(
            f"No lung found in the volume from {volume.meta.source}: no air region of at least "
            f"{MIN_COMPONENT_ML} ml inside the body below {AIR_THRESHOLD_HU} HU. Check that this is a "
            "chest CT in Hounsfield units with the whole thorax in the field of view."
        )
    if len(sizes) == 1 or sizes[1] < MERGED_RATIO * sizes[0]:
        labels = _split_merged(comps == 1)
    else:
        cx = [np.flatnonzero((comps == k).any(axis=(0, 1))).mean() for k in (1, 2)]
        # image left is label 1 for now; _assign_sides fixes it by direction
        labels = comps if cx[0] < cx[1] else np.array([0, 2, 1], np.uint8)[comps]
    labels = _close_and_fill(labels, (sy, sx), closing_radius_mm)
    labels = recover_surface_lesions(labels, arr, (sy, sx), recover_radius_mm,
                                     inferior_step=inferior_step_of(volume.direction))
    _check_chest(labels, body, volume)
    return _assign_sides(labels, volume)


def _check_chest(labels: np.ndarray, body: np.ndarray, volume: Volume) -> None:
    """Refuse a scan where no slice's lungs cover `MIN_LUNG_BODY_SHARE` of the body (not a chest CT).

    Raises:
        LungNotFoundError: with the share found.
    """
    lung = labels > 0
    z = lung.shape[0]
    lung_area = np.count_nonzero(lung.reshape(z, -1), axis=1)
    body_area = np.count_nonzero((body | lung).reshape(z, -1), axis=1)
    share = float((lung_area / np.maximum(body_area, 1)).max())
    if share < MIN_LUNG_BODY_SHARE:
        raise LungNotFoundError(
            f"No chest found in {volume.meta.source}: the air regions taken for lung cover at most "
            f"{share:.0%} of the body's cross-section in any slice (a chest CT shows at least "
            f"{MIN_LUNG_BODY_SHARE:.0%}). This looks like a head, abdomen or other non-chest CT; "
            "quantitative CT needs a chest CT with the lungs in the field of view."
        )


def lung_volume_ml(mask: np.ndarray, spacing: tuple[float, float, float], label: int | None = None) -> float:
    """Volume in ml of ``mask > 0`` (or of ``mask == label``) for voxel ``spacing`` (z, y, x) mm."""
    voxels = int(np.count_nonzero(mask == label if label is not None else mask > 0))
    return voxels * float(np.prod(spacing)) * ML_PER_MM3
