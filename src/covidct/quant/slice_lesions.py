"""Weight-free lesion score of one 2D grey CT slice (any lung-windowed image or 8-bit export).

The HU lesion rule of `covidct.quant.lesions` (ground glass -700..-300 HU, consolidation
-300..+100 HU, after a grey opening that removes vessels) needs Hounsfield units. Most 2D sources
are 8-bit images with an unknown window, so this module first maps grey values to *pseudo-HU*
with two anchors measured in the image itself, then applies the same bands:

1. **Lungs, pixel size, lung hull and pseudo-HU** (`covidct.preprocessing.lung_intensity`, shared
   with the slice models' `LungFocus`): the lungs found by the image's own Otsu threshold (also in
   lung crops), the pixel size estimated from the body or lung width, and grey -> pseudo-HU from
   two anchors measured in the image (aerated lung -> `PARENCHYMA_HU`, body tissue ->
   `SOFT_TISSUE_HU`). Adult sizes: a child or a zoomed crop is off by their ratio, which changes
   the opening box in pixels, not the intensity bands.
2. **Lesions**: the bands of `covidct.quant.bands` (`band_masks`) on the pseudo-HU after a grey opening
   with the in-plane box of `lesions.LesionParams` (outside the hull set to air, so the pleural rim
   falls too), hilar region dropped as in `lesions` (`HILAR_DISTANCE_MM` from the mediastinum).

The score is the lesion fraction of the hull, in [0, 1]. No parameter was fitted to data: the
constants come from CT physics and anatomy (cited at each). Honest caveat: before they were fixed, a
prototype on the multi-source cohort of issue 11 (`covidct build-cohort`) looked at five cut-offs
(0.15-0.7 of the parenchyma-to-soft-tissue span); the -700 HU GGO bound of `lesions` corresponds to
about 0.17 of that span, so the cohort was seen once, not used to tune.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from covidct.errors import QuantError
from covidct.io.volume import HOUNSFIELD_AIR
from covidct.preprocessing.lung_intensity import (
    IntensityAnchors,
    find_lungs,
    measure_anchors,
    working_grid,
)
from covidct.preprocessing.transforms import LungWindow
from covidct.quant.bands import band_masks, in_lesion_bands
from covidct.quant.lesions import LesionParams, drop_hilar


@dataclass(frozen=True)
class SliceLesions:
    """Lesion figures of one slice; fractions are of the lung hull's area."""

    lesion_fraction: float
    ggo_fraction: float
    consolidation_fraction: float
    anchors: IntensityAnchors
    pixel_mm: float
    mask_kind: str

    @property
    def score(self) -> float:
        """Weight-free lesion score in [0, 1] (= ``lesion_fraction``)."""
        return self.lesion_fraction


@dataclass
class SliceLesionMaps:
    """Masks (H, W bool) and pseudo-HU (H, W float32) on the working grid (``scale`` x input size)."""

    lung: np.ndarray
    hull: np.ndarray
    ggo: np.ndarray
    consolidation: np.ndarray
    pseudo_hu: np.ndarray
    anchors: IntensityAnchors
    pixel_mm: float
    mask_kind: str
    scale: float

    def figures(self) -> SliceLesions:
        area = float(self.hull.sum())
        ggo, cons = float(self.ggo.sum()) / area, float(self.consolidation.sum()) / area
        return SliceLesions(ggo + cons, ggo, cons, self.anchors, self.pixel_mm, self.mask_kind)


# ----------------------------------------------------------------------------- grid and masks
def working_grey(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W) grey as float32 on the working grid, and the scale factor applied (<= 1)."""
    grey = np.asarray(grey, np.float32)
    if grey.ndim != 2:
        raise QuantError(f"A slice must be a 2D grey image (H, W), but it is {grey.ndim}D {grey.shape}.")
    if not np.isfinite(grey).all():
        raise QuantError("The slice holds NaN or infinite values; give a finite grey image (0..255).")
    return working_grid(grey)


# ----------------------------------------------------------------------------- lesions
def opening_box_px(pixel_mm: float, params: LesionParams | None = None) -> tuple[int, int]:
    """In-plane (y, x) opening box in pixels for the lesion opening box (`LesionParams`) at ``pixel_mm``."""
    box_mm = (LesionParams() if params is None else params).opening_box_mm
    return tuple(max(1, int(round(mm / pixel_mm))) for mm in box_mm[1:])  # type: ignore[return-value]


def lesion_bands(pseudo_hu: np.ndarray, hull: np.ndarray, pixel_mm: float, params: LesionParams | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(GGO, consolidation) masks (H, W bool) of the opened pseudo-HU inside ``hull``, hila dropped;
    box, bands and hilar distance from ``params`` (default `LesionParams()`, the 3D path's)."""
    params = LesionParams() if params is None else params
    inside = np.where(hull, pseudo_hu, np.float32(HOUNSFIELD_AIR))
    size = opening_box_px(pixel_mm, params)
    opened = ndi.grey_opening(inside, size=size, mode="constant", cval=HOUNSFIELD_AIR)
    ggo, cons = band_masks(opened, params.ggo_hu, params.consolidation_hu)
    ggo, cons = ggo & hull, cons & hull
    keep = drop_hilar((ggo | cons)[None], hull[None].astype(np.uint8), (pixel_mm, pixel_mm),
                      params.hilar_distance_mm)[0]
    return ggo & keep, cons & keep


def analyse_slice(grey: np.ndarray) -> SliceLesionMaps:
    """Lungs, pseudo-HU and lesions of one grey slice (H, W; 0..255, lung-windowed or 8-bit export).

    Raises:
        QuantError: not 2D, non-finite, uniform, no lung, no body tissue, or not lung-windowed.
    """
    work, scale = working_grey(grey)
    lungs = find_lungs(work)
    anchors = measure_anchors(work, lungs.lung, lungs.tissue_outside())
    pseudo_hu = anchors.to_hu(work)
    ggo, cons = lesion_bands(pseudo_hu, lungs.hull, lungs.pixel_mm)
    return SliceLesionMaps(
        lungs.lung, lungs.hull, ggo, cons, pseudo_hu, anchors, lungs.pixel_mm, lungs.kind, scale
    )


def slice_lesions(grey: np.ndarray) -> SliceLesions:
    """Lesion fractions and the weight-free score of one grey slice (see `analyse_slice`)."""
    return analyse_slice(grey).figures()


# ----------------------------------------------------------------------------- validation on HU
@dataclass(frozen=True)
class PseudoHUCheck:
    """One HU slice windowed to grey and analysed: pseudo-HU against the true HU (inside the hull,
    true HU clipped to the window's range), and the lesion fraction from pseudo-HU against the same
    rule (hull, opening, bands) on the true HU, so the difference is the standardisation's alone."""

    median_abs_error_hu: float
    median_error_hu: float
    median_abs_error_lesion_bands_hu: float
    lesion_fraction: float
    lesion_fraction_true_hu: float


def check_pseudo_hu(hu: np.ndarray, center: float, width: float) -> PseudoHUCheck:
    """`PseudoHUCheck` of one (H, W) HU slice shown in the window ``center``/``width`` (HU); the band
    error is over hull pixels whose true HU lies in the GGO or consolidation band (NaN if none).

    Raises:
        QuantError: as `analyse_slice`.
    """
    maps = analyse_slice(LungWindow(center, width)(hu))
    truth, _ = working_grey(np.clip(hu, center - width / 2.0, center + width / 2.0))
    error = maps.pseudo_hu[maps.hull] - truth[maps.hull]
    in_bands = in_lesion_bands(truth[maps.hull])
    band_error = float(np.median(np.abs(error[in_bands]))) if in_bands.any() else float("nan")
    ggo, cons = lesion_bands(truth, maps.hull, maps.pixel_mm)
    true_fraction = float((ggo | cons).sum()) / float(maps.hull.sum())
    return PseudoHUCheck(
        float(np.median(np.abs(error))),
        float(np.median(error)),
        band_error,
        maps.figures().lesion_fraction,
        true_fraction,
    )
