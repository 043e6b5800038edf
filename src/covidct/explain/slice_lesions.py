"""Weight-free lesion score of one 2D grey CT slice (any lung-windowed image or 8-bit export).

The HU lesion rule of `covidct.explain.lesions` (ground glass -700..-300 HU, consolidation
-300..+100 HU, after a grey opening that removes vessels) needs Hounsfield units. Most 2D sources
are 8-bit images with an unknown window, so this module first maps grey values to *pseudo-HU*
with two anchors measured in the image itself, then applies the same bands:

1. **Lungs** (`lung_masks`): dark pixels below the image's Otsu threshold (between the air/lung
   and the soft-tissue mode of any window, so the mask does not depend on which window was used).
   ``enclosed``: the dark pixels enclosed by the body (as `enclosed_dark_mask`). Lung-cropped images
   (Inf-Net) cut the body at the border and enclose nothing; they fall back to ``cropped``: dark
   components that do not hold an image corner (the corners hold the air outside the body); and
   when that leaves too little, ``dark``: every dark component. Components smaller than
   `MIN_COMPONENT_FRACTION` of the image are dropped.
2. **Pixel size** (`estimate_pixel_mm`): unknown for 8-bit images, estimated from the body width
   (`BODY_WIDTH_MM`) or, when the body is cut by the border, from the width of the lungs
   (`LUNG_FIELD_WIDTH_MM`). Adult sizes; a child or a zoomed crop is off by their ratio, which
   changes the opening box and the closing radius in pixels, not the intensity bands.
3. **Lung hull** (`lung_hull`): the lungs closed with a disk of `lungs.CLOSING_RADIUS_MM` and
   filled, so dense lesions inside or on the edge of the lung belong to it.
4. **Pseudo-HU** (`IntensityAnchors`): median grey of the aerated lung -> `PARENCHYMA_HU`, median
   grey of the body tissue outside the hull -> `SOFT_TISSUE_HU`, linear in between. A different
   window or a gamma change of the export moves both anchors with the image.
5. **Lesions**: `lesions.GGO_HU` and `lesions.CONSOLIDATION_HU` on the pseudo-HU after a grey opening
   with the in-plane box of `lesions.OPENING_BOX_MM` (outside the hull set to air, so the pleural rim
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
from skimage.filters import threshold_otsu
from skimage.morphology import disk
from skimage.transform import resize

from covidct.errors import ExplainError
from covidct.explain.lesions import CONSOLIDATION_HU, GGO_HU, OPENING_BOX_MM, _drop_hilar
from covidct.explain.lungs import CLOSING_RADIUS_MM
from covidct.io.volume import HOUNSFIELD_AIR
from covidct.preprocessing.transforms import LungWindow

PARENCHYMA_HU = -850.0
"""Median attenuation of aerated lung at inspiration (healthy adults: mean lung density about -850 HU,
e.g. Gevenois et al. AJRCCM 1996; the Fleischner glossary, Hansell et al. 2008, puts normal lung at
-700..-900 HU)."""
SOFT_TISSUE_HU = 40.0
"""Soft tissue (muscle, blood, mediastinum): +40 HU (standard CT number tables: muscle 35-55 HU,
blood 30-45 HU). The anchor is the median of all body tissue outside the lungs, dominated by those."""
BODY_WIDTH_MM = 330.0
"""Assumed left-right width of an adult chest at the lungs (about 30-35 cm)."""
LUNG_FIELD_WIDTH_MM = 260.0
"""Assumed left-right width of both lungs together (inner thoracic width of adults, about 26 cm)."""
WORK_LONG_SIDE_PX = 256
"""Larger images are resized (anti-aliased) so the long side has this many pixels; smaller stay."""
SMOOTHING_PX = 1.0
"""Gaussian sigma (pixels, working grid) before the lung/tissue threshold."""
MIN_LUNG_FRACTION = 0.05
"""A lung mask must cover at least this share of the image (the cohort's lung-slice rule)."""
MIN_COMPONENT_FRACTION = 0.01
"""Dark components smaller than this share of the image (airway, noise) are not lung."""
MIN_ANCHOR_PIXELS = 50
"""Each anchor needs at least this many pixels."""
MIN_SPAN_GREY = 20.0
"""The soft-tissue anchor must be at least this many grey levels above the parenchyma anchor."""
MASK_KINDS = ("enclosed", "cropped", "dark")


@dataclass(frozen=True)
class IntensityAnchors:
    """Two grey levels of the image and the HU they stand for; ``to_hu`` maps linearly."""

    parenchyma_grey: float
    soft_tissue_grey: float

    def to_hu(self, grey: np.ndarray) -> np.ndarray:
        """Pseudo-HU (float32, same shape) of grey values."""
        scale = (SOFT_TISSUE_HU - PARENCHYMA_HU) / (self.soft_tissue_grey - self.parenchyma_grey)
        return (PARENCHYMA_HU + (np.asarray(grey, np.float32) - self.parenchyma_grey) * scale).astype(
            np.float32
        )


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
        raise ExplainError(f"A slice must be a 2D grey image (H, W), but it is {grey.ndim}D {grey.shape}.")
    if not np.isfinite(grey).all():
        raise ExplainError("The slice holds NaN or infinite values; give a finite grey image (0..255).")
    scale = min(1.0, WORK_LONG_SIDE_PX / max(grey.shape))
    if scale < 1.0:
        shape = tuple(max(1, round(s * scale)) for s in grey.shape)
        grey = resize(grey, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    return grey, scale


def tissue_threshold(grey: np.ndarray) -> float:
    """Otsu grey level between the air/lung and the tissue mode of a smoothed (H, W) slice."""
    if float(np.ptp(grey)) < MIN_SPAN_GREY:
        raise ExplainError(
            f"The slice is (nearly) uniform (grey range {float(np.ptp(grey)):.1f}); no lung or body to "
            "measure. Give a lung-windowed chest CT slice."
        )
    return float(threshold_otsu(grey))


def _components(mask: np.ndarray, min_pixels: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels of ``mask`` and a keep-table (by label) of components with >= ``min_pixels``."""
    labels, n = ndi.label(mask)
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_pixels
    keep[0] = False
    return labels, keep


def body_mask(tissue: np.ndarray) -> np.ndarray:
    """Largest tissue component with its holes filled (H, W bool); empty when there is no tissue."""
    labels, n = ndi.label(tissue)
    if n == 0:
        return np.zeros(tissue.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    return ndi.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)


def lung_masks(dark: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, str]:
    """Lung mask (H, W bool) and its kind (`MASK_KINDS`) from the dark mask and the body mask.

    Raises:
        ExplainError: no dark region large enough for a lung.
    """
    min_pixels = MIN_COMPONENT_FRACTION * dark.size
    labels, keep = _components(dark, min_pixels)
    enclosed = keep[labels] & body
    if enclosed.mean() >= MIN_LUNG_FRACTION:
        return enclosed, "enclosed"
    corners = [labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]]
    inner = keep.copy()
    inner[corners] = False
    if inner[labels].mean() >= MIN_LUNG_FRACTION:
        return inner[labels], "cropped"
    if keep[labels].mean() >= MIN_LUNG_FRACTION:
        return keep[labels], "dark"
    raise ExplainError(
        f"No lung found: dark regions cover {dark.mean():.1%} of the slice (need {MIN_LUNG_FRACTION:.0%}). "
        "Give a lung-windowed chest CT slice through the lungs."
    )


def _width_px(mask: np.ndarray) -> int:
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[-1] - cols[0] + 1) if cols.size else 0


def body_is_cut(body: np.ndarray) -> bool:
    """True when the body touches both the left and the right image border (a lung crop)."""
    return bool(body[:, 0].any() and body[:, -1].any())


def estimate_pixel_mm(body: np.ndarray, lung: np.ndarray, mask_kind: str) -> float:
    """Pixel size (mm) from the body width when the body encloses the lungs and is not cut by the
    left/right border; else from the width of the lungs."""
    if mask_kind == "enclosed" and not body_is_cut(body):
        return BODY_WIDTH_MM / max(_width_px(body), 1)
    return LUNG_FIELD_WIDTH_MM / max(_width_px(lung), 1)


def lung_hull(lung: np.ndarray, pixel_mm: float) -> np.ndarray:
    """The lungs closed with a disk of `CLOSING_RADIUS_MM` and filled (H, W bool)."""
    radius = max(1, int(round(CLOSING_RADIUS_MM / pixel_mm)))
    padded = np.pad(lung, radius + 1)
    closed = ndi.binary_closing(padded, structure=disk(radius))
    return ndi.binary_fill_holes(closed)[radius + 1 : -(radius + 1), radius + 1 : -(radius + 1)] | lung


# ----------------------------------------------------------------------------- intensity
def measure_anchors(grey: np.ndarray, lung: np.ndarray, tissue_outside: np.ndarray) -> IntensityAnchors:
    """Median grey of the aerated lung and of the body tissue outside the lung hull.

    Raises:
        ExplainError: too few pixels for an anchor, or no contrast between them.
    """
    if lung.sum() < MIN_ANCHOR_PIXELS or tissue_outside.sum() < MIN_ANCHOR_PIXELS:
        raise ExplainError(
            f"Too little lung ({int(lung.sum())} px) or body tissue ({int(tissue_outside.sum())} px) to "
            f"anchor the intensity scale (need {MIN_ANCHOR_PIXELS} each); give a slice showing both."
        )
    anchors = IntensityAnchors(float(np.median(grey[lung])), float(np.median(grey[tissue_outside])))
    if anchors.soft_tissue_grey - anchors.parenchyma_grey < MIN_SPAN_GREY:
        raise ExplainError(
            f"Body tissue (grey {anchors.soft_tissue_grey:.0f}) is not brighter than the lung "
            f"(grey {anchors.parenchyma_grey:.0f}); the image is not lung-windowed (or is inverted)."
        )
    return anchors


# ----------------------------------------------------------------------------- lesions
def opening_box_px(pixel_mm: float) -> tuple[int, int]:
    """In-plane (y, x) opening box in pixels for `OPENING_BOX_MM` at ``pixel_mm``."""
    return tuple(max(1, int(round(mm / pixel_mm))) for mm in OPENING_BOX_MM[1:])  # type: ignore[return-value]


def lesion_bands(pseudo_hu: np.ndarray, hull: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(GGO, consolidation) masks (H, W bool) of the opened pseudo-HU inside ``hull``, hila dropped."""
    inside = np.where(hull, pseudo_hu, np.float32(HOUNSFIELD_AIR))
    opened = ndi.grey_opening(inside, size=opening_box_px(pixel_mm), mode="constant", cval=HOUNSFIELD_AIR)
    ggo = hull & (opened >= GGO_HU[0]) & (opened < GGO_HU[1])
    cons = hull & (opened >= CONSOLIDATION_HU[0]) & (opened <= CONSOLIDATION_HU[1])
    keep = _drop_hilar((ggo | cons)[None], hull[None].astype(np.uint8), (pixel_mm, pixel_mm))[0]
    return ggo & keep, cons & keep


def analyse_slice(grey: np.ndarray) -> SliceLesionMaps:
    """Lungs, pseudo-HU and lesions of one grey slice (H, W; 0..255, lung-windowed or 8-bit export).

    Raises:
        ExplainError: not 2D, non-finite, uniform, no lung, no body tissue, or not lung-windowed.
    """
    work, scale = working_grey(grey)
    smooth = ndi.gaussian_filter(work, SMOOTHING_PX)
    tissue = smooth >= tissue_threshold(smooth)
    body = body_mask(tissue)
    lung, kind = lung_masks(~tissue, body)
    pixel_mm = estimate_pixel_mm(body, lung, kind)
    hull = lung_hull(lung, pixel_mm)
    outside = tissue & ~hull & (body if kind == "enclosed" else True)
    anchors = measure_anchors(work, lung, outside)
    pseudo_hu = anchors.to_hu(work)
    ggo, cons = lesion_bands(pseudo_hu, hull, pixel_mm)
    return SliceLesionMaps(lung, hull, ggo, cons, pseudo_hu, anchors, pixel_mm, kind, scale)


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
        ExplainError: as `analyse_slice`.
    """
    maps = analyse_slice(LungWindow(center, width)(hu))
    truth, _ = working_grey(np.clip(hu, center - width / 2.0, center + width / 2.0))
    error = maps.pseudo_hu[maps.hull] - truth[maps.hull]
    in_bands = (truth[maps.hull] >= GGO_HU[0]) & (truth[maps.hull] <= CONSOLIDATION_HU[1])
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
