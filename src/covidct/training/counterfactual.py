"""Counterfactual slices: the same image with its lesions removed, or with ground glass added.

In the multi-source cohort most sources hold one class (Inf-Net and ieee8023 only COVID-19, LIDC-IDRI
and Kaggle only Normal), so a slice model can learn *which export* an image comes from instead of
*whether its lungs hold opacities*. A counterfactual pair breaks that shortcut: during training a
slice is, with some probability (`SliceDataset` of `covidct.training.datasets`), replaced by

- ``add_ground_glass`` (a Non-COVID slice -> labelled COVID-19): one to three smooth ground-glass
  patches (`GGO_TARGET_HU`, `PATCH_DIAMETER_MM`), placed mostly in the outer third of the lung
  (`PERIPHERAL_SHARE`), the typical COVID-19 distribution, raising only pixels darker than the
  patch's target so vessels and the image's own noise stay;
- ``remove_lesions`` (a COVID-19 slice -> labelled Non-COVID): the lesions found by the weight-free
  rule (`covidct.quant.slice_lesions`, slightly dilated) replaced by the slice's own aerated
  parenchyma (its median pseudo-HU plus its own noise); a slice with too little lesion to remove
  (`MIN_LESION_FRACTION`) is left as it is, since its label may rest on what the rule cannot see.

Both edit the grey image in pseudo-HU (`covidct.preprocessing.lung_intensity`), at the image's own
resolution, and return grey 0..255 in the same window, so the source's look stays and only the
lungs' content changes. The edits are approximations: synthetic patches are smoother than real
ground glass, and the removal leaves what the rule misses; both are measured by their effect on the
held-out sources (docs/results.md), not assumed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from covidct.errors import QuantError
from covidct.preprocessing.lung_intensity import (
    PARENCHYMA_HU,
    find_lungs,
    lung_periphery,
    measure_anchors,
    working_grid,
)

GGO_TARGET_HU = (-650.0, -450.0)
"""Range of a planted patch's centre HU (ground glass: -700..-300 HU, `covidct.quant.bands`)."""
PATCH_DIAMETER_MM = (25.0, 70.0)
PATCHES = (1, 3)
"""Inclusive range of the number of planted patches."""
PERIPHERAL_SHARE = 0.75
"""Probability that a patch centre lies in the outer third of the lung (`lung_periphery`)."""
EDGE_SOFTNESS = 0.1
"""Gaussian blur of a patch edge, as a fraction of its radius."""
MIN_LESION_FRACTION = 0.01
"""`remove_lesions` leaves a slice whose found lesions cover less of the lung hull than this."""
ERASE_DILATION_PX = 2
"""Margin (working-grid pixels) added around found lesions before they are replaced."""
DEFAULT_NOISE_HU = 30.0
"""Noise of the replacing parenchyma when too few aerated pixels (`MIN_NOISE_PIXELS`) measure it."""
MIN_NOISE_PIXELS = 50


def _full_size(field: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A working-grid field (H', W') resized to the image's ``shape`` (bilinear)."""
    if field.shape == shape:
        return field.astype(np.float32)
    return resize(field, shape, order=1, anti_aliasing=False, preserve_range=True).astype(np.float32)


def _patch(
    shape: tuple[int, int], centre: tuple[int, int], radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Soft irregular patch (H, W) in [0, 1]: an ellipse with a noisy edge, blurred."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    ry, rx = radius * rng.uniform(0.7, 1.3, size=2)
    angle = rng.uniform(0.0, np.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
    edge = 1.0 + 0.3 * ndi.gaussian_filter(rng.normal(size=shape), max(radius / 3.0, 1.0)) * 3.0
    inside = (u**2 + v**2 <= edge**2).astype(np.float32)
    return np.clip(ndi.gaussian_filter(inside, max(EDGE_SOFTNESS * radius, 0.5)), 0.0, 1.0)


def add_ground_glass(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``grey`` (H, W; 0..255) with planted ground-glass patches in its lungs (float32, same shape).

    Raises:
        QuantError: no lungs or no intensity anchors found (not a usable lung slice).
    """
    grey = np.asarray(grey, np.float32)
    work, _ = working_grid(grey)
    lungs = find_lungs(work)
    anchors = measure_anchors(work, lungs.lung, lungs.tissue_outside())
    outer = lung_periphery(lungs.hull)
    field = np.zeros(work.shape, np.float32)
    for _ in range(int(rng.integers(PATCHES[0], PATCHES[1] + 1))):
        pool = outer if (rng.random() < PERIPHERAL_SHARE and outer.any()) else lungs.hull
        ys, xs = np.nonzero(pool)
        pick = int(rng.integers(len(ys)))
        radius = rng.uniform(*PATCH_DIAMETER_MM) / 2.0 / lungs.pixel_mm
        field = np.maximum(field, _patch(work.shape, (ys[pick], xs[pick]), radius, rng))
    field *= lungs.hull
    hu = anchors.to_hu(grey)
    target = np.float32(rng.uniform(*GGO_TARGET_HU))
    raised = hu + _full_size(field, grey.shape) * np.maximum(target - hu, 0.0)
    return anchors.to_grey(raised)


def _noise_hu(lung_hu: np.ndarray) -> float:
    """Robust standard deviation (1.4826 x MAD) of aerated-lung pseudo-HU; `DEFAULT_NOISE_HU` if too few."""
    if lung_hu.size < MIN_NOISE_PIXELS:
        return DEFAULT_NOISE_HU
    return float(1.4826 * np.median(np.abs(lung_hu - np.median(lung_hu))))


def remove_lesions(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """``grey`` (H, W; 0..255) with its found lesions replaced by aerated lung (float32), or None
    when the lesions found cover less than `MIN_LESION_FRACTION` of the lung hull.

    Raises:
        QuantError: as `covidct.quant.slice_lesions.analyse_slice`.
    """
    from covidct.quant.slice_lesions import analyse_slice

    grey = np.asarray(grey, np.float32)
    maps = analyse_slice(grey)
    lesion = maps.ggo | maps.consolidation
    if lesion.sum() < MIN_LESION_FRACTION * maps.hull.sum():
        return None
    region = ndi.binary_dilation(lesion, iterations=ERASE_DILATION_PX) & maps.hull
    alpha = np.clip(ndi.gaussian_filter(region.astype(np.float32), 1.0) * 1.5, 0.0, 1.0)
    hu = maps.anchors.to_hu(grey)
    full_alpha = _full_size(alpha, grey.shape)
    aerated = _full_size((maps.lung & ~region).astype(np.float32), grey.shape) > 0.5
    noise = rng.normal(0.0, _noise_hu(hu[aerated]), grey.shape).astype(np.float32)
    lung_hu = np.float32(PARENCHYMA_HU) + noise
    return maps.anchors.to_grey(hu + full_alpha * (lung_hu - hu))


def counterfactual_slice(
    grey: np.ndarray, is_covid: bool, rng: np.random.Generator
) -> np.ndarray | None:
    """The other class's version of a slice (see the module doc), or None when none can be made
    (no lungs found, or a COVID-19 slice with too little visible lesion)."""
    try:
        return remove_lesions(grey, rng) if is_covid else add_ground_glass(grey, rng)
    except QuantError:
        return None
