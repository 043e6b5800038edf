"""Find the lungs in one 2D grey CT slice of any source and standardise its intensities.

Sources differ in window, gamma and export (DICOM HU through the lung window, 8-bit figure crops,
screenshots). Two pieces serve every consumer (`LungFocus` for the slice models' input,
`covidct.quant.slice_lesions` for the weight-free lesion score):

1. **Lungs** (`find_lungs`): dark pixels below the image's Otsu threshold (between the air/lung and
   the soft-tissue mode of any window). ``enclosed``: the dark pixels enclosed by the body.
   Lung-cropped images (Inf-Net) cut the body at the border and enclose nothing; they fall back to
   ``cropped``: dark components that do not hold an image corner (the corners hold the air outside
   the body); and when that leaves too little, ``dark``: every dark component. Components smaller
   than `MIN_COMPONENT_FRACTION` of the image are dropped. The pixel size, unknown for 8-bit images,
   is estimated from the body width (`BODY_WIDTH_MM`) or, when the body is cut by the border, from the
   width of the lungs (`LUNG_FIELD_WIDTH_MM`); the lung hull is the lungs closed with a disk of
   `CLOSING_RADIUS_MM` and filled, so dense lesions inside or on the edge of the lung belong to it.
2. **Pseudo-HU** (`IntensityAnchors`): median grey of the aerated lung -> `PARENCHYMA_HU`, median grey
   of the body tissue outside the hull -> `SOFT_TISSUE_HU`, linear in between. A different window or a
   gamma change of the export moves both anchors with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import convex_hull_object, disk
from skimage.transform import resize

from covidct.errors import LungNotFoundError, ShapeError
from covidct.preprocessing.masks import body_mask
from covidct.preprocessing.window import LUNG_WINDOW, Window, window

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
LUNG_DARK_GREY = 110.0
"""`enclosed_dark_mask`: grey value (0..255 after the lung window; about -700 HU) below which enclosed body
pixels count as lung."""
LUNG_MASK_SMOOTHING_PX = 2.0
WORK_LONG_SIDE_PX = 256
"""Lungs and anchors are found on a grid whose long side has at most this many pixels (anti-aliased
resize); a 512 px slice takes about 20 ms there, its full-resolution closing several hundred."""
CLOSING_RADIUS_MM = 10.0
"""Closing radius of the lung hull (also the 3D lung segmentation's, `covidct.quant.lungs`): dense
lesions (consolidation) on the lung surface join the lung."""
PERIPHERAL_DEPTH = 1.0 / 3.0
"""`lung_periphery`: the outer third of the lung's depth."""
MIN_MASKED_LUNG_FRACTION = 0.08
"""`LungFocus` masks only when the lung hull covers at least this fraction of the image: lungs that
consolidation has whitened are not found whole, and masking them would hide the disease."""


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

    def to_grey(self, hu: np.ndarray) -> np.ndarray:
        """Inverse of `to_hu`: grey values (float32, same shape) of pseudo-HU, clipped to 0..255."""
        scale = (self.soft_tissue_grey - self.parenchyma_grey) / (SOFT_TISSUE_HU - PARENCHYMA_HU)
        grey = self.parenchyma_grey + (np.asarray(hu) - PARENCHYMA_HU) * scale
        return np.clip(grey, 0.0, 255.0).astype(np.float32)


@dataclass(frozen=True)
class LungRegion:
    """The lungs of one slice (masks H, W bool) and what was measured with them."""

    lung: np.ndarray
    hull: np.ndarray
    body: np.ndarray
    tissue: np.ndarray
    kind: str
    pixel_mm: float

    def tissue_outside(self) -> np.ndarray:
        """Body tissue outside the lung hull (the soft-tissue anchor's pixels)."""
        return self.tissue & ~self.hull & (self.body if self.kind == "enclosed" else True)


def tissue_threshold(grey: np.ndarray) -> float:
    """Otsu grey level between the air/lung and the tissue mode of a smoothed (H, W) slice."""
    if float(np.ptp(grey)) < MIN_SPAN_GREY:
        raise LungNotFoundError(
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


def enclosed_dark_mask(grey: np.ndarray, *, dark: float = LUNG_DARK_GREY,
                       sigma: float = LUNG_MASK_SMOOTHING_PX) -> np.ndarray:
    """Lung-like mask of one lung-windowed grey slice (H, W; 0..255) with a fixed grey threshold (the
    slice recipe's `LungBox` and the cohort's lung-slice rule): pixels darker than ``dark`` enclosed
    by the body (`body_mask` of the brighter pixels). A body cut by the image border encloses nothing."""
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2:
        raise ShapeError(f"enclosed_dark_mask expects one 2D slice, but it is {grey.ndim}D {grey.shape}.")
    tissue = ndi.gaussian_filter(grey, sigma) >= dark
    return body_mask(tissue) & ~tissue


def lung_masks(dark: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, str]:
    """Lung mask (H, W bool) and its kind (`MASK_KINDS`) from the dark mask and the body mask.

    Raises:
        LungNotFoundError: no dark region large enough for a lung.
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
    raise LungNotFoundError(
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


def lung_periphery(hull: np.ndarray, depth_fraction: float = PERIPHERAL_DEPTH) -> np.ndarray:
    """The outer part of the lung hull (H, W bool): pixels whose distance to the hull border is at most
    ``depth_fraction`` of the deepest pixel's (the subpleural zone where COVID-19 opacities sit)."""
    depth = ndi.distance_transform_edt(np.pad(hull, 1))[1:-1, 1:-1]
    return hull & (depth <= depth_fraction * depth.max())


def measure_anchors(grey: np.ndarray, lung: np.ndarray, tissue_outside: np.ndarray) -> IntensityAnchors:
    """Median grey of the aerated lung and of the body tissue outside the lung hull.

    Raises:
        LungNotFoundError: too few pixels for an anchor, or no contrast between them.
    """
    if lung.sum() < MIN_ANCHOR_PIXELS or tissue_outside.sum() < MIN_ANCHOR_PIXELS:
        raise LungNotFoundError(
            f"Too little lung ({int(lung.sum())} px) or body tissue ({int(tissue_outside.sum())} px) to "
            f"anchor the intensity scale (need {MIN_ANCHOR_PIXELS} each); give a slice showing both."
        )
    anchors = IntensityAnchors(float(np.median(grey[lung])), float(np.median(grey[tissue_outside])))
    if anchors.soft_tissue_grey - anchors.parenchyma_grey < MIN_SPAN_GREY:
        raise LungNotFoundError(
            f"Body tissue (grey {anchors.soft_tissue_grey:.0f}) is not brighter than the lung "
            f"(grey {anchors.parenchyma_grey:.0f}); the image is not lung-windowed (or is inverted)."
        )
    return anchors


def working_grid(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W) grey as float32 on the working grid (long side <= `WORK_LONG_SIDE_PX`) and the scale
    factor applied (<= 1)."""
    grey = np.asarray(grey, np.float32)
    scale = min(1.0, WORK_LONG_SIDE_PX / max(grey.shape))
    if scale < 1.0:
        shape = tuple(max(1, round(s * scale)) for s in grey.shape)
        grey = resize(grey, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    return grey, scale


def find_lungs(grey: np.ndarray, smoothing_px: float = SMOOTHING_PX) -> LungRegion:
    """`LungRegion` of one (H, W) grey slice (0..255, any window).

    Raises:
        LungNotFoundError: uniform image, or no dark region large enough for a lung.
    """
    smooth = ndi.gaussian_filter(np.asarray(grey, np.float32), smoothing_px)
    tissue = smooth >= tissue_threshold(smooth)
    body = body_mask(tissue)
    lung, kind = lung_masks(~tissue, body)
    pixel_mm = estimate_pixel_mm(body, lung, kind)
    return LungRegion(lung, lung_hull(lung, pixel_mm), body, tissue, kind, pixel_mm)


class LungFocus:
    """Per-image intensity standardisation and masking outside the lungs, for one lung-windowed
    grey slice (H, W; 0..255) -> the same, float32: the slice models' defence against the source.

    ``standardise``: grey -> pseudo-HU with the image's own anchors (`IntensityAnchors`) -> the lung
    window (``window``: center, width in HU), so every export shows its parenchyma and soft tissue at
    the grey of -850 and +40 HU. ``mask``: pixels outside the lungs (the lung hull joined with each
    lung's convex hull, so subpleural opacities stay) set to 0 (air), removing text, tables and
    borders; not when that region covers < `MIN_MASKED_LUNG_FRACTION` of the image. A slice whose
    lungs or anchors cannot be found is returned unchanged (it is not a usable lung slice).
    """

    def __init__(self, *, standardise: bool = True, mask: bool = True,
                 window: tuple[float, float] = (LUNG_WINDOW.center, LUNG_WINDOW.width)) -> None:
        self.standardise, self.mask = bool(standardise), bool(mask)
        self.window = Window(float(window[0]), float(window[1]))

    @staticmethod
    def region(lungs: LungRegion) -> np.ndarray:
        """What is kept by the mask (H, W bool): the hull and each lung component's convex hull."""
        region = lungs.hull | convex_hull_object(lungs.lung, connectivity=2)
        return region if region.mean() >= MIN_MASKED_LUNG_FRACTION else np.ones(region.shape, bool)

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        grey = np.asarray(grey, dtype=np.float32)
        if grey.ndim != 2:
            raise LungNotFoundError(f"LungFocus expects one 2D slice (H, W), got shape {grey.shape}.")
        work, scale = working_grid(grey)
        try:
            lungs = find_lungs(work)
            anchors = measure_anchors(work, lungs.lung, lungs.tissue_outside())
        except LungNotFoundError:
            return grey
        out = window(anchors.to_hu(grey), self.window) if self.standardise else grey
        if self.mask:
            region = self.region(lungs)
            if scale < 1.0:
                region = resize(region, grey.shape, order=0, anti_aliasing=False).astype(bool)
            out = np.where(region, out, 0.0)
        return out.astype(np.float32)
