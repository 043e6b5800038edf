"""Lesion features of one 2D grey CT slice: what a radiologist reads, measured on pseudo-HU.

`covidct.quant.slice_lesions` finds the lungs, maps grey to pseudo-HU with the image's own anchors
and marks ground glass (GGO) and consolidation. This module turns those maps into a short vector of
figures that describe the *pattern*, all normalised to the lung so that nothing says how large the
image, the crop or the pixels are (which would identify the source, not the disease):

=============================  ===========================================================================
feature                        meaning (fractions are of the lung hull's area unless said)
=============================  ===========================================================================
``ggo_fraction``               ground glass (-700..-300 HU after the vessel opening)
``consolidation_fraction``     consolidation (-300..+100 HU after the opening)
``lesion_score``               log-compressed lesion fraction, log(1 + 100 f) / log(101), in [0, 1]
``hu_p50/p75/p90``             median and upper quantiles of the lung's pseudo-HU (denser lung -> higher),
                               as (HU - `PARENCHYMA_HU`) / 1000
``dense_fraction``             pixels above -700 HU *before* the opening (lesions and vessels)
``peripheral_lesion``          lesion fraction of the outer third of the lung (by distance to the pleura)
``central_lesion``             lesion fraction of the inner two thirds
``posterior_lesion``           lesion fraction of the lung below its centroid (posterior in the usual
                               axial display)
``anterior_lesion``            lesion fraction above the centroid
``bilateral_lesion``           the smaller of the two lungs' lesion fractions (0 with one lung found)
``lesion_foci``                log(1 + number of separate lesions >= `MIN_FOCUS_MM2`) / log(11), capped at 1
=============================  ===========================================================================

COVID-19 pneumonia is typically bilateral, peripheral, posterior and multifocal ground glass (RSNA
consensus, Simpson et al., Radiology: Cardiothoracic Imaging 2020); bacterial pneumonia more often
lobar, unilateral consolidation. The features were fixed from that reading, before any model was fitted
on them. Nothing here is fitted: `covidct.training.lesion_model` fits a logistic regression on them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from covidct.preprocessing.lung_intensity import PARENCHYMA_HU, lung_periphery
from covidct.quant.slice_lesions import SliceLesionMaps, analyse_slice

FEATURE_NAMES: tuple[str, ...] = (
    "ggo_fraction",
    "consolidation_fraction",
    "lesion_score",
    "hu_p50",
    "hu_p75",
    "hu_p90",
    "dense_fraction",
    "peripheral_lesion",
    "central_lesion",
    "posterior_lesion",
    "anterior_lesion",
    "bilateral_lesion",
    "lesion_foci",
)
"""Order of the values in `lesion_features`."""
DENSE_HU = -700.0
"""Lower bound of 'dense' lung before the vessel opening (the GGO band's lower bound)."""
HU_SCALE = 1000.0
"""Pseudo-HU quantiles are reported as (HU - PARENCHYMA_HU) / HU_SCALE: about 0 for normal lung."""
MIN_FOCUS_MM2 = 25.0
"""A lesion focus counts when it covers at least this area (5 x 5 mm)."""
MAX_FOCI = 10
"""`lesion_foci` saturates at this many foci."""
LESION_SCORE_GAIN = 100.0


def _fraction(part: np.ndarray, region: np.ndarray) -> float:
    area = float(region.sum())
    return float((part & region).sum()) / area if area else 0.0


def _two_lungs(hull: np.ndarray) -> list[np.ndarray]:
    """The two largest components of the hull (one if the lungs touch or only one was found)."""
    labels, n = ndi.label(hull)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:2]
    return [labels == int(i) + 1 for i in order if sizes[i] >= 0.1 * sizes.max()]


def lesion_features(maps: SliceLesionMaps) -> np.ndarray:
    """The `FEATURE_NAMES` values (float64, shape (len(FEATURE_NAMES),)) of one analysed slice."""
    hull, lesion = maps.hull, maps.ggo | maps.consolidation
    figures = maps.figures()
    hu = maps.pseudo_hu[hull]
    p50, p75, p90 = (np.percentile(hu, [50, 75, 90]) - PARENCHYMA_HU) / HU_SCALE
    peripheral = lung_periphery(hull)
    rows = np.nonzero(hull)[0]
    posterior = hull & (np.arange(hull.shape[0])[:, None] > rows.mean())
    lungs = _two_lungs(hull)
    bilateral = min(_fraction(lesion, lung) for lung in lungs) if len(lungs) == 2 else 0.0
    labels, n = ndi.label(lesion)
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0)
    foci = int((sizes * maps.pixel_mm**2 >= MIN_FOCUS_MM2).sum())
    return np.array(
        [
            figures.ggo_fraction,
            figures.consolidation_fraction,
            np.log1p(LESION_SCORE_GAIN * figures.lesion_fraction) / np.log1p(LESION_SCORE_GAIN),
            p50,
            p75,
            p90,
            float((hu >= DENSE_HU).mean()),
            _fraction(lesion, peripheral),
            _fraction(lesion, hull & ~peripheral),
            _fraction(lesion, posterior),
            _fraction(lesion, hull & ~posterior),
            bilateral,
            min(1.0, np.log1p(foci) / np.log1p(MAX_FOCI)),
        ],
        np.float64,
    )


def slice_features(grey: np.ndarray) -> np.ndarray:
    """`lesion_features` of one grey slice (H, W; 0..255, lung-windowed or an 8-bit export).

    Raises:
        QuantError: as `covidct.quant.slice_lesions.analyse_slice` (no lung, not lung-windowed...).
    """
    return lesion_features(analyse_slice(grey))
