"""Synthetic chest CT phantoms with class-specific lesions (COVID-19, pneumonia, normal).

The phantom is built in normalised in-plane coordinates ``u`` (x, patient right -> left, i.e.
image left -> right) and ``v`` (y, anterior -> posterior), both in [-1, 1] over the smaller
field-of-view half-width, and ``zf`` in [0, 1] (superior -> inferior). Branching structures
(vessels, airways) are grown in millimetres and rendered with one Euclidean distance transform.

Everything is seeded through one ``numpy.random.Generator``; a default (40, 192, 192) phantom
takes well under a second on one core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from covidct.classes import COVID, NORMAL, PNEUMONIA, canonical_class
from covidct.errors import ConfigError, UnknownClassError
from covidct.io.volume import Volume, VolumeMetadata

# ---- Hounsfield values of the tissues -------------------------------------
HU_AIR = -1000.0
HU_FAT = -100.0
HU_MEDIASTINAL_FAT = -80.0
HU_MUSCLE = 40.0
HU_BLOOD = 40.0
HU_FLUID = 10.0
HU_LUNG = -850.0
HU_VESSEL = 40.0
HU_BONE_CORTEX = 900.0
HU_BONE_MARROW = 350.0
HU_GGO_RANGE = (-700.0, -300.0)
"""Ground-glass opacity (COVID-19): hazy, vessels stay visible."""
HU_GGO_BASE_RANGE = (-620.0, -500.0)
HU_SEPTAL_LINES = 190.0
"""Added to GGO on the reticular (crazy-paving) lines."""
HU_CONSOLIDATION_RANGE = (-100.0, 50.0)
"""Consolidation (bacterial pneumonia): dense, vessels hidden, air bronchograms."""
HU_CONSOLIDATION_BASE_RANGE = (-40.0, 30.0)
NOISE_SIGMA_HU = 20.0
LUNG_TEXTURE_HU = 15.0
HU_LIVER = 55.0
COVID_MIN_ZF = 0.35
COVID_LESIONS_PER_LUNG = (3, 6)
"""[low, high) number of GGO lesions per lung."""
COVID_LESION_RADIUS = (0.13, 0.24)
"""GGO lesion semi-axes as fractions of the half field of view."""
"""COVID lesion centres lie below this fraction of the scan height (rarely above)."""
MIN_BRANCH_RADIUS_MM = 0.35
BRANCH_CHILDREN = 2
BRANCH_ATTEMPTS = 4
BRANCH_ROOT_LENGTH = 0.12
"""Length of a tree's first segment as a fraction of the in-plane field of view."""

PATIENT_AGE_RANGE = (25, 86)
DEFAULT_SHAPE = (40, 192, 192)
DEFAULT_SPACING = (2.5, 0.8, 0.8)

# right lung = patient right = image left (u < 0); label 1. Left lung label 2.
LUNG_LABEL_RIGHT = 1
LUNG_LABEL_LEFT = 2
_LUNG_GEOMETRY = {
    # label: (centre u, centre v, semi-axis u, semi-axis v, diaphragm offset in zf)
    LUNG_LABEL_RIGHT: (-0.40, -0.02, 0.34, 0.50, -0.04),
    LUNG_LABEL_LEFT: (0.41, -0.02, 0.32, 0.50, 0.0),
}
_HILUM_UV = {LUNG_LABEL_RIGHT: (-0.22, 0.0), LUNG_LABEL_LEFT: (0.24, 0.0)}
_HILUM_ZF = 0.45
_CARINA_ZF = 0.33


@dataclass
class Phantom:
    """A synthetic chest CT and its ground truth.

    Attributes:
        volume: HU volume (z, y, x) float32, ``is_hu`` True, ``meta.format == 'synthetic'``.
        lesion_mask: bool (z, y, x), True inside GGO / consolidation.
        lung_mask: uint8 (z, y, x): 0 outside, 1 right lung (image left), 2 left lung (image right).
        label: canonical class name ('COVID-19', 'Pneumonia' or 'Normal').
        info: facts about the lesions (side, count, lobe) for tests and demos.
    """

    volume: Volume
    lesion_mask: np.ndarray
    lung_mask: np.ndarray
    label: str
    info: dict = field(default_factory=dict)


@dataclass
class _Grid:
    """Broadcastable coordinates of the phantom grid."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    u: np.ndarray  # (1, 1, X)
    v: np.ndarray  # (1, Y, 1)
    zf: np.ndarray  # (Z, 1, 1)
    radius_mm: float  # mm per unit of u / v

    @classmethod
    def build(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> _Grid:
        nz, ny, nx = shape
        sz, sy, sx = spacing
        radius = min(nx * sx, ny * sy) / 2.0
        u = ((np.arange(nx, dtype=np.float32) + 0.5) * sx - nx * sx / 2.0) / radius
        v = ((np.arange(ny, dtype=np.float32) + 0.5) * sy - ny * sy / 2.0) / radius
        zf = (np.arange(nz, dtype=np.float32) + 0.5) / nz
        return cls(shape, spacing, u[None, None, :], v[None, :, None], zf[:, None, None], radius)

    def to_index(self, u: float, v: float, zf: float) -> tuple[float, float, float]:
        """Normalised coordinates -> fractional voxel index (z, y, x)."""
        nz, ny, nx = self.shape
        sz, sy, sx = self.spacing
        return (zf * nz - 0.5, (v * self.radius_mm + ny * sy / 2.0) / sy - 0.5,
                (u * self.radius_mm + nx * sx / 2.0) / sx - 0.5)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float | np.ndarray, cv: float | np.ndarray,
             au: float | np.ndarray, av: float | np.ndarray) -> np.ndarray:
    """Normalised squared radius ((u-cu)/au)^2 + ((v-cv)/av)^2 (<= 1 inside)."""
    return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int],
                  cells: tuple[int, int, int]) -> np.ndarray:
    """Smooth random field in about [-1, 1], shape ``shape``, with ``cells`` control points per axis."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, cells, strict=True)]
    out = ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)
    out = out[: shape[0], : shape[1], : shape[2]]
    if out.shape != tuple(shape):  # zoom rounding
        out = np.pad(out, [(0, s - o) for s, o in zip(shape, out.shape, strict=True)], mode="edge")
    return out / max(float(np.abs(out).max()), 1e-6)


# ---- anatomy ----------------------------------------------------------------
def _body(g: _Grid, vol: np.ndarray) -> np.ndarray:
    """Body outline, subcutaneous fat, muscle and the mediastinal fat inside; returns thorax cavity."""
    body = _ellipse(g.u, g.v, 0, 0.02, 0.95, 0.72) <= 1
    muscle = _ellipse(g.u, g.v, 0, 0.02, 0.89, 0.65) <= 1
    cavity = _ellipse(g.u, g.v, 0, 0.02, 0.83, 0.58) <= 1
    vol[...] = HU_AIR
    vol[np.broadcast_to(body, vol.shape)] = HU_FAT
    vol[np.broadcast_to(muscle, vol.shape)] = HU_MUSCLE
    vol[np.broadcast_to(cavity, vol.shape)] = HU_MEDIASTINAL_FAT
    return np.broadcast_to(cavity, vol.shape)


def _organs(g: _Grid) -> dict[str, np.ndarray]:
    """Masks (z, y, x) of mediastinal organs and the spine."""
    shape = g.shape
    lower = g.zf > 0.42
    heart_scale = np.clip((g.zf - 0.42) / 0.2, 0, 1) ** 0.5
    heart = lower & (_ellipse(g.u, g.v, 0.10, -0.14, 0.34 * heart_scale + 1e-3,
                              0.30 * heart_scale + 1e-3) <= 1) & (g.zf < 0.93)
    asc_aorta = (g.zf > 0.12) & (g.zf < 0.45) & (_ellipse(g.u, g.v, 0.04, -0.22, 0.09, 0.09) <= 1)
    arch = (g.zf <= 0.12) & (_ellipse(g.u, g.v, 0.06, 0.0, 0.10, 0.30) <= 1)
    desc_aorta = _ellipse(g.u, g.v, 0.13, 0.30, 0.08, 0.08) <= 1
    esophagus = _ellipse(g.u, g.v, 0.02, 0.24, 0.05, 0.04) <= 1
    soft = heart | asc_aorta | arch | desc_aorta | esophagus
    r_spine = np.sqrt(_ellipse(g.u, g.v, 0.0, 0.44, 0.12, 0.11))
    vertebra = r_spine <= 1
    marrow = r_spine <= 0.8
    canal = _ellipse(g.u, g.v, 0.0, 0.595, 0.05, 0.045) <= 1
    spinous = (_ellipse(g.u, g.v, 0.0, 0.66, 0.035, 0.06) <= 1) | (
        _ellipse(g.u, g.v, 0.0, 0.585, 0.10, 0.075) <= 1) & ~canal
    paraspinal = (_ellipse(g.u, g.v, -0.17, 0.55, 0.11, 0.10) <= 1) | (
        _ellipse(g.u, g.v, 0.17, 0.55, 0.11, 0.10) <= 1)
    sternum = (g.zf < 0.75) & (_ellipse(g.u, g.v, 0.0, -0.60, 0.09, 0.03) <= 1)
    full = {
        "soft": soft, "vertebra": vertebra, "marrow": marrow, "canal": canal, "spinous": spinous,
        "paraspinal": paraspinal, "sternum": sternum,
    }
    return {k: np.broadcast_to(m, shape) for k, m in full.items()}


def _ribs(g: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rib cross-sections (cortex, marrow masks): ovals in the chest wall whose presence and
    position change with z as the ribs slope."""
    n_per_side = 7
    cortex = np.zeros(g.shape, dtype=bool)
    marrow = np.zeros(g.shape, dtype=bool)
    angles = np.linspace(0.25 * np.pi, 1.05 * np.pi, n_per_side)
    phase = rng.uniform(0, 1)
    for side in (-1.0, 1.0):
        for j, ang in enumerate(angles):
            theta = ang + 0.35 * g.zf  # ribs slope: cross-section moves with z
            cu = side * 0.86 * np.sin(theta)
            cv = -0.60 * np.cos(theta) + 0.02
            visible = np.sin(2 * np.pi * (g.zf * 3.0 + phase + j * 0.13)) > -0.2
            r = _ellipse(g.u, g.v, cu, cv, 0.045, 0.028)
            cortex |= visible & (r <= 1)
            marrow |= visible & (r <= 0.45)
    return cortex, marrow


def _lungs(g: _Grid, cavity: np.ndarray, organs: dict[str, np.ndarray]) -> np.ndarray:
    """uint8 lung labels: an ellipse per lung, narrow at the apex, domed diaphragm at the base."""
    lung = np.zeros(g.shape, dtype=np.uint8)
    scale = np.clip(g.zf / 0.35, 0.3, 1.0) ** 0.6
    blocked = organs["soft"] | organs["vertebra"] | organs["paraspinal"] | organs["sternum"]
    inner = _ellipse(g.u, g.v, 0, 0.02, 0.80, 0.55) <= 1
    for label, (cu, cv, au, av, dz) in _LUNG_GEOMETRY.items():
        r2 = _ellipse(g.u, g.v, cu, cv, au * scale, av * (0.6 + 0.4 * scale))
        dome = 0.80 + dz + 0.17 * np.minimum(r2, 1.0)
        mask = (r2 <= 1) & (g.zf > 0.02) & (g.zf < dome) & inner & cavity & ~blocked
        lung[mask] = label
    return lung


def _abdomen(g: _Grid, cavity: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Cavity voxels under the diaphragm domes (liver / spleen), as a (z, y, x) mask."""
    below = np.zeros(g.shape, dtype=bool)
    seen = np.zeros(g.shape[1:], dtype=bool)
    for z in range(g.shape[0]):  # a voxel is abdomen once the lung above it has ended
        has_lung = lung[z] > 0
        if g.zf[z, 0, 0] > 0.6:
            below[z] = seen & ~has_lung & cavity[z]
        seen |= has_lung
    return below


def _grow_tree(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, radius: float,
               length: float, depth: int, inside: Callable[[np.ndarray], bool], out: list,
               origin: np.ndarray | None = None) -> None:
    """Recursively grow a branching tree (mm coordinates z, y, x); append (p0, p1, radius).

    Children leave the parent's end at 20-45 degrees, biased away from the tree's origin
    (the hilum), and get thinner and shorter, so vessels taper towards the pleura.
    """
    if depth == 0 or radius < MIN_BRANCH_RADIUS_MM:
        return
    origin = start if origin is None else origin
    direction = direction / np.linalg.norm(direction)
    steps = np.linspace(0.0, length, max(int(length / 1.0), 2))
    end = start
    for s in steps[1:]:
        p = start + direction * s
        if not inside(p):
            break
        end = p
    if np.linalg.norm(end - start) < 0.5:
        return
    out.append((start, end, radius))
    outward = end - origin
    outward /= max(np.linalg.norm(outward), 1e-6)
    for _ in range(BRANCH_CHILDREN):
        for _attempt in range(BRANCH_ATTEMPTS):  # retry a child that would leave the lung at once
            perturb = rng.normal(0, 1, 3)
            perturb -= perturb.dot(direction) * direction
            perturb /= max(np.linalg.norm(perturb), 1e-6)
            angle = rng.uniform(0.35, 0.9)
            child = np.cos(angle) * direction + np.sin(angle) * perturb + 0.3 * outward
            child /= np.linalg.norm(child)
            if inside(end + child * 1.5):
                break
        _grow_tree(rng, end, child, radius * rng.uniform(0.72, 0.84), length * rng.uniform(0.62, 0.76),
                   depth - 1, inside, out, origin)


def _tree_segments(g: _Grid, rng: np.random.Generator, lung: np.ndarray, root_radius: float,
                   depth: int) -> list:
    """Segments of a branching tree in each lung, rooted at the hilum."""
    sp = np.asarray(g.spacing, dtype=np.float64)
    dil = lung > 0

    def inside(p: np.ndarray) -> bool:
        idx = np.round(p / sp).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.asarray(g.shape)):
            return False
        return bool(dil[tuple(idx)])

    segments: list = []
    fov_mm = np.asarray(g.shape) * sp
    for label, (hu, hv) in _HILUM_UV.items():
        zi, yi, xi = g.to_index(hu, hv, _HILUM_ZF)
        hilum = np.array([zi, yi, xi]) * sp
        lateral = np.sign(_LUNG_GEOMETRY[label][0])
        roots = [(-1.0, 0.0, 0.3 * lateral), (-0.3, -0.5, lateral), (0.0, 0.0, lateral),
                 (0.3, 0.6, 0.8 * lateral), (1.0, 0.2, 0.4 * lateral), (0.6, -0.5, 0.6 * lateral)]
        for d in roots:
            direction = np.asarray(d, dtype=np.float64)
            # move into the lung before growing
            start = hilum + direction / np.linalg.norm(direction) * 2.0
            length = BRANCH_ROOT_LENGTH * float(min(fov_mm[1:]))
            seg: list = []
            _grow_tree(rng, start, direction, root_radius, length, depth, inside, seg)
            if not seg:  # the root started outside the lung: step along until inside
                for s in np.linspace(2.0, 30.0, 15):
                    p = hilum + direction / np.linalg.norm(direction) * s
                    if inside(p):
                        _grow_tree(rng, p, direction, root_radius, length, depth, inside, seg)
                        break
            segments.extend(seg)
    return segments


def _rasterise(g: _Grid, segments: list, extra: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) of every voxel to the nearest centreline and that centreline's radius (mm)."""
    sp = np.asarray(g.spacing, dtype=np.float64)
    radius_img = np.zeros(g.shape, dtype=np.float32)
    pts_all, rad_all = [], []
    for p0, p1, r in list(segments) + list(extra or []):
        n = max(int(np.linalg.norm(p1 - p0) / (0.5 * sp.min())), 2)
        t = np.linspace(0.0, 1.0, n)[:, None]
        pts_all.append(p0 + (p1 - p0) * t)
        rad_all.append(np.full(n, r, dtype=np.float32))
    if not pts_all:
        return np.full(g.shape, np.inf, dtype=np.float32), radius_img
    pts = np.concatenate(pts_all)
    rad = np.concatenate(rad_all)
    idx = np.round(pts / sp).astype(int)
    ok = np.all((idx >= 0) & (idx < np.asarray(g.shape)), axis=1)
    idx, rad = idx[ok], rad[ok]
    np.maximum.at(radius_img, (idx[:, 0], idx[:, 1], idx[:, 2]), rad)
    dist, nearest = ndimage.distance_transform_edt(radius_img == 0, sampling=g.spacing,
                                                   return_indices=True)
    return dist.astype(np.float32), radius_img[tuple(nearest)]


def _airway_centrelines(g: _Grid) -> list:
    """Trachea and main bronchi as mm segments (z, y, x)."""
    sp = np.asarray(g.spacing)

    def mm(u: float, v: float, zf: float) -> np.ndarray:
        return np.asarray(g.to_index(u, v, zf)) * sp

    r_trachea = 0.07 * g.radius_mm
    r_main = 0.045 * g.radius_mm
    top, carina = mm(0.0, 0.10, 0.0), mm(0.0, 0.08, _CARINA_ZF)
    segs = [(top, carina, r_trachea)]
    for hu, hv in _HILUM_UV.values():
        segs.append((carina, mm(hu, hv, _HILUM_ZF), r_main))
    return segs


# ---- lesions ------------------------------------------------------------------
def _blob(g: _Grid, centre: np.ndarray, radii_mm: np.ndarray, rough: np.ndarray) -> tuple:
    """Soft ellipsoid weight in [0, 1] within its bounding box; returns (slices, weight)."""
    sp = np.asarray(g.spacing)
    lo = np.maximum(np.floor((centre - 1.4 * radii_mm) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((centre + 1.4 * radii_mm) / sp).astype(int) + 1, np.asarray(g.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axes = [((np.arange(a, b) * s - c) / r) for a, b, s, c, r in zip(lo, hi, sp, centre, radii_mm,
                                                                       strict=True)]
    r2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    field_ = 1.0 - r2 + 0.45 * rough[box]
    return box, np.clip(field_ / 0.25, 0.0, 1.0).astype(np.float32)


def _pick_centres(rng: np.random.Generator, candidates: np.ndarray, weights: np.ndarray, n: int,
                  sp: np.ndarray) -> np.ndarray:
    """Draw ``n`` voxel centres (mm) from candidate indices with the given weights."""
    if len(candidates) == 0:
        raise ConfigError("The phantom is too small to hold lesions; use a shape of at least (16, 64, 64).")
    p = weights / weights.sum()
    chosen = rng.choice(len(candidates), size=n, replace=len(candidates) < n, p=p)
    return candidates[chosen] * sp


def _covid_lesions(g: _Grid, rng: np.random.Generator, lung: np.ndarray, rough: np.ndarray,
                   texture: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Bilateral, peripheral, lower-predominant GGO with crazy paving: (weight, HU, info)."""
    sp = np.asarray(g.spacing)
    weight = np.zeros(g.shape, dtype=np.float32)
    hu = np.zeros(g.shape, dtype=np.float32)
    counts = {}
    # reticular network: contour lines of a smooth field
    septa = (np.abs(((texture + 1.0) * 5.0) % 1.0 - 0.5) > 0.40).astype(np.float32)
    for label, (cu, cv, au, av, _dz) in _LUNG_GEOMETRY.items():
        zz, yy, xx = np.nonzero(lung == label)
        u = g.u[0, 0, xx]
        v = g.v[0, yy, 0]
        zf = g.zf[zz, 0, 0]
        periph = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
        lower = np.where(zf > COVID_MIN_ZF, zf ** 3, 1e-3)  # lower-lobe predominant
        w = np.clip(periph - 0.55, 0, None) ** 2 * lower * (1.0 + 0.6 * (v > 0)) + 1e-9
        n = int(rng.integers(*COVID_LESIONS_PER_LUNG))
        counts[label] = n
        cand = np.stack([zz, yy, xx], axis=1)
        centres = _pick_centres(rng, cand, w, n, sp)
        for c in centres:
            radii = rng.uniform(*COVID_LESION_RADIUS, 3) * g.radius_mm
            radii[0] = max(radii[0] * 1.2, 1.5 * sp[0])
            box, wb = _blob(g, c, radii, rough)
            base = rng.uniform(*HU_GGO_BASE_RANGE)
            lesion_hu = np.clip(base + HU_SEPTAL_LINES * septa[box] + 25.0 * texture[box], *HU_GGO_RANGE)
            take = wb > weight[box]
            weight[box] = np.where(take, wb, weight[box])
            hu[box] = np.where(take, lesion_hu, hu[box])
    weight *= lung > 0
    return weight, hu, {"lesions_per_lung": {"right": counts[LUNG_LABEL_RIGHT],
                                             "left": counts[LUNG_LABEL_LEFT]}}


_CP_REGIONS = ("lower", "upper", "middle")


def _cp_lesion(g: _Grid, rng: np.random.Generator, lung: np.ndarray, rough: np.ndarray,
               texture: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Unilateral lobar/segmental consolidation: (weight, HU, info)."""
    sp = np.asarray(g.spacing)
    side = int(rng.choice([LUNG_LABEL_RIGHT, LUNG_LABEL_LEFT]))
    region = str(rng.choice(_CP_REGIONS))
    in_lung = lung == side
    # lobe-like half spaces cut by an oblique "fissure"
    if region == "lower":
        lobe = (g.zf - 0.55) + 0.6 * (g.v - 0.0) > 0
    elif region == "upper":
        lobe = (0.45 - g.zf) - 0.4 * g.v > 0
    else:
        lobe = (g.zf > 0.45) & (g.zf < 0.8) & (g.v < 0.05)
    lobe_mask = in_lung & lobe
    if lobe_mask.sum() < 50:
        lobe_mask = in_lung
    zz, yy, xx = np.nonzero(lobe_mask)
    cand = np.stack([zz, yy, xx], axis=1)
    centre = _pick_centres(rng, cand, np.ones(len(cand)), 1, sp)[0]
    radii = rng.uniform(0.34, 0.46, 3) * g.radius_mm
    radii[0] = max(radii[0] * 1.3, 3 * sp[0])
    box, wb = _blob(g, centre, radii, rough)
    weight = np.zeros(g.shape, dtype=np.float32)
    weight[box] = wb
    weight *= lobe_mask
    base = rng.uniform(*HU_CONSOLIDATION_BASE_RANGE)
    hu = np.clip(base + 20.0 * texture, *HU_CONSOLIDATION_RANGE).astype(np.float32)
    return weight, hu, {"side": "right" if side == LUNG_LABEL_RIGHT else "left", "region": region}


# ---- public API ---------------------------------------------------------------
def _validate(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    if len(shape) != 3 or shape[0] < 4 or shape[1] < 32 or shape[2] < 32:
        raise ConfigError(f"Phantom shape must be (z, y, x) with z >= 4 and y, x >= 32, got {shape}.")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError(f"Phantom spacing must be three positive mm values (z, y, x), got {spacing}.")


def make_phantom(label: str, *, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                 spacing: tuple[float, float, float] = DEFAULT_SPACING, seed: int = 0) -> Phantom:
    """Build a synthetic chest CT of class ``label``.

    Args:
        label: 'COVID-19', 'Pneumonia' or 'Normal' (aliases 'covid', 'cp', 'normal', ... accepted).
        shape: (z, y, x) voxels; z runs superior -> inferior.
        spacing: (z, y, x) voxel size in mm.
        seed: seed of the ``numpy.random.Generator`` driving every random choice.

    Returns:
        `Phantom` with an HU `Volume` (float32, air -1000, lungs ~-850, bone 350-900),
        a bool lesion mask and uint8 lung labels (1 right = image left, 2 left).

    COVID-19: 2-4 peripheral, lower-predominant ground-glass lesions per lung (-700..-300 HU)
    with crazy-paving septal lines. Pneumonia: one unilateral lobar/segmental consolidation
    (-100..+50 HU) that hides the vessels and shows air bronchograms. Normal: no lesion.
    """
    canon = canonical_class(label)
    if canon not in (COVID, PNEUMONIA, NORMAL):
        raise UnknownClassError(f"Phantoms exist for COVID-19, Pneumonia and Normal, not {label!r}.")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    _validate(shape, spacing)
    rng = np.random.default_rng(seed)
    g = _Grid.build(shape, spacing)
    vol = np.empty(shape, dtype=np.float32)
    cavity = _body(g, vol)
    organs = _organs(g)
    lung = _lungs(g, cavity, organs)
    in_lung = lung > 0
    vol[_abdomen(g, cavity, lung)] = HU_LIVER

    coarse = (max(shape[0] // 6, 2), max(shape[1] // 12, 2), max(shape[2] // 12, 2))
    rough = _smooth_noise(rng, shape, coarse)
    fine = (max(shape[0] // 3, 2), max(shape[1] // 5, 2), max(shape[2] // 5, 2))
    texture = _smooth_noise(rng, shape, fine)

    vol[in_lung] = HU_LUNG + LUNG_TEXTURE_HU * texture[in_lung]
    info: dict = {}
    lesion_w = np.zeros(shape, dtype=np.float32)
    if canon == COVID:
        lesion_w, lesion_hu, info = _covid_lesions(g, rng, lung, rough, texture)
        vol[...] = vol * (1 - lesion_w) + lesion_hu * lesion_w

    vessel_segs = _tree_segments(g, rng, lung, root_radius=0.045 * g.radius_mm, depth=7)
    dist, rad = _rasterise(g, vessel_segs)
    vessel_w = np.clip((rad - dist) / 0.8 + 0.5, 0.0, 1.0) * in_lung
    vol[...] = vol * (1 - vessel_w) + HU_VESSEL * vessel_w

    if canon == PNEUMONIA:
        lesion_w, lesion_hu, info = _cp_lesion(g, rng, lung, rough, texture)
        vol[...] = vol * (1 - lesion_w) + lesion_hu * lesion_w

    bronchi = _tree_segments(g, rng, lung, root_radius=0.035 * g.radius_mm, depth=5)
    dist, rad = _rasterise(g, bronchi, extra=_airway_centrelines(g))
    airway_w = np.clip((rad - dist) / 0.8, 0.0, 1.0) * (in_lung | cavity)
    vol[...] = vol * (1 - airway_w) + HU_AIR * airway_w

    _paint_organs(vol, organs, _ribs(g, rng))
    vol += rng.normal(0.0, NOISE_SIGMA_HU, size=shape).astype(np.float32)
    age, sex = int(rng.integers(*PATIENT_AGE_RANGE)), str(rng.choice(["M", "F"]))
    meta = VolumeMetadata(
        source=f"synthetic:{canon}:seed={seed}", format="synthetic", modality="CT",
        patient_age=f"{age:03d}Y", patient_sex=sex,
        manufacturer="covidct-synthetic", kernel="STANDARD", slice_thickness_mm=spacing[0],
        series_description=f"synthetic chest CT ({canon})",
        extra={"label": canon, "seed": seed, **info},
    )
    origin = (-shape[2] * spacing[2] / 2.0, -shape[1] * spacing[1] / 2.0, 0.0)
    direction = np.diag([1.0, 1.0, -1.0])
    volume = Volume(array=vol.astype(np.float32, copy=False), spacing=spacing, origin=origin,
                    direction=direction, is_hu=True, meta=meta)
    return Phantom(volume=volume, lesion_mask=lesion_w > 0.5, lung_mask=lung, label=canon, info=info)


def _paint_organs(vol: np.ndarray, organs: dict[str, np.ndarray],
                  ribs: tuple[np.ndarray, np.ndarray]) -> None:
    """Paint soft tissue, muscle and bone over the lungs' neighbours (order matters)."""
    vol[organs["paraspinal"]] = HU_MUSCLE
    vol[organs["soft"]] = HU_BLOOD
    vol[organs["vertebra"]] = HU_BONE_CORTEX
    vol[organs["marrow"]] = HU_BONE_MARROW
    vol[organs["spinous"]] = HU_BONE_CORTEX * 0.8
    vol[organs["canal"]] = HU_FLUID
    vol[organs["sternum"]] = HU_BONE_CORTEX * 0.7
    cortex, marrow = ribs
    vol[cortex] = HU_BONE_CORTEX
    vol[marrow] = HU_BONE_MARROW


_ZONE_THIRDS = {"upper": 0, "middle": 1, "lower": 2}
_SIDE_LABELS = {"right": LUNG_LABEL_RIGHT, "left": LUNG_LABEL_LEFT}
_LESION_HU = {"ggo": -550.0, "consolidation": 0.0}
_LESION_EDGE_MM = 1.0
"""Width of the soft lesion edge (weight 0 -> 1), in mm."""
_PLEURAL_DEPTH = 0.6
"""A peripheral lesion's centre lies this many radii inside the lung edge (so the pleura cuts it)."""


def add_lesion(phantom: Phantom, *, side: str, zone: str, kind: str = "ggo", radius_mm: float = 10.0,
               peripheral: bool = True) -> Phantom:
    """A copy of ``phantom`` with one spherical lesion in one zone of one lung.

    The zones are the thirds of that lung's craniocaudal extent (the convention of
    `covidct.quant.regions.zone_map`); the lesion's centre is the slice with the most lung in the
    middle half of the zone, and in-plane either the lung point furthest from the hilum at
    `_PLEURAL_DEPTH` x ``radius_mm`` from the lung's edge (``peripheral``: subpleural, cut by the
    pleura) or the point nearest the hilum at ``radius_mm`` + 2 mm. The lesion is clipped to the lung.

    Args:
        phantom: from `make_phantom` (usually 'Normal').
        side: 'right' or 'left' (patient side; right = image left here).
        zone: 'upper', 'middle' or 'lower'.
        kind: 'ggo' (-550 HU, vessels stay visible) or 'consolidation' (0 HU, hides them).
        radius_mm: sphere radius.
        peripheral: put it against the chest wall (True) or near the hilum (False).

    Returns:
        a new `Phantom` whose ``lesion_mask`` is the union of the old one and the new lesion and
        whose ``info['planted']`` says where it is.
    """
    if side not in _SIDE_LABELS or zone not in _ZONE_THIRDS or kind not in _LESION_HU:
        raise ConfigError(f"add_lesion: side in {sorted(_SIDE_LABELS)}, zone in {sorted(_ZONE_THIRDS)}, "
                          f"kind in {sorted(_LESION_HU)}; got {side!r}, {zone!r}, {kind!r}.")
    lung = phantom.lung_mask == _SIDE_LABELS[side]
    rows = np.flatnonzero(lung.any(axis=(1, 2)))
    edges = np.linspace(rows[0], rows[-1] + 1, 4)
    k = _ZONE_THIRDS[zone]
    quarter = (edges[k + 1] - edges[k]) / 4
    middle = np.arange(int(np.ceil(edges[k] + quarter)), int(edges[k + 1] - quarter))
    z = int(middle[np.argmax(lung[middle].sum(axis=(1, 2)))])
    sz, sy, sx = phantom.volume.spacing
    dist = ndimage.distance_transform_edt(lung[z], sampling=(sy, sx))
    depth = _PLEURAL_DEPTH * radius_mm if peripheral else radius_mm + 2.0
    inner = dist >= depth
    if not inner.any():
        raise ConfigError(f"The {side} lung's {zone} zone is too small for a {radius_mm} mm lesion.")
    ys, xs = np.nonzero(inner)
    hilum_u, hilum_v = _HILUM_UV[_SIDE_LABELS[side]]
    g = _Grid.build(phantom.volume.shape, phantom.volume.spacing)
    _, hy, hx = g.to_index(hilum_u, hilum_v, 0.5)
    far = np.hypot((ys - hy) * sy, (xs - hx) * sx)
    pick = int(np.argmax(far) if peripheral else np.argmin(far))
    centre = np.array([z * sz, ys[pick] * sy, xs[pick] * sx])
    zz, yy, xx = np.indices(lung.shape, sparse=True)
    r = np.sqrt((zz * sz - centre[0]) ** 2 + (yy * sy - centre[1]) ** 2 + (xx * sx - centre[2]) ** 2)
    weight = (np.clip((radius_mm - r) / _LESION_EDGE_MM + 0.5, 0.0, 1.0) * lung).astype(np.float32)
    hu = _LESION_HU[kind]
    vol = phantom.volume.array.copy()
    painted = vol * (1 - weight) + hu * weight
    vol = np.maximum(vol, painted) if kind == "ggo" else painted
    volume = Volume(vol.astype(np.float32), phantom.volume.spacing, origin=phantom.volume.origin,
                    direction=phantom.volume.direction, is_hu=True, meta=phantom.volume.meta)
    planted = {"side": side, "zone": zone, "kind": kind, "radius_mm": radius_mm, "peripheral": peripheral,
               "centre_index": [int(z), int(ys[pick]), int(xs[pick])]}
    lesion_mask = phantom.lesion_mask | (weight > 0.5)
    return Phantom(volume=volume, lesion_mask=lesion_mask, lung_mask=phantom.lung_mask, label=phantom.label,
                   info={**phantom.info, "planted": planted})
