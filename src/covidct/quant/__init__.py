"""Quantitative CT from Hounsfield units, no trained weights: lungs, lesions, zones, severity.

Layering: ``io -> preprocessing -> quant -> models -> training / evaluation / explain -> service``;
this package imports only `covidct.io` and `covidct.preprocessing`.

- `analyse_ct(volume) -> CTAnalysis`: the one producer of lung, lesion, zone and periphery numbers
  of a 3D HU scan (`analysis`), built from `segment_lungs` (`lungs`), `segment_lesions` (`lesions`),
  `LungRegions` (`regions`: zones and periphery) and `score_scan` (`severity`); its first step,
  `find_lungs(volume) -> LungGrid`, can run on its own and be handed to it (``lungs=``).
- `bands`: the one definition of the ground-glass and consolidation HU bands.
- `slice_lesions` / `slice_features`: the 2D grey-image path (pseudo-HU, the same bands).
- `lung_slice_mask`: which slices show lung.
"""

from covidct.quant.analysis import CTAnalysis, LungGrid, analyse_ct, analysis_unavailable, find_lungs
from covidct.quant.bands import CONSOLIDATION_HU, GGO_HU, band_masks
from covidct.quant.lesions import LesionMasks, segment_lesions
from covidct.quant.lung_slices import lung_slice_mask
from covidct.quant.lungs import LEFT_LUNG, RIGHT_LUNG, lung_volume_ml, segment_lungs
from covidct.quant.regions import LungRegions, Quantification, zone_map
from covidct.quant.severity import SeverityReport, score_scan, severity_score

__all__ = [
    "CONSOLIDATION_HU",
    "CTAnalysis",
    "GGO_HU",
    "LEFT_LUNG",
    "LesionMasks",
    "LungGrid",
    "LungRegions",
    "Quantification",
    "RIGHT_LUNG",
    "SeverityReport",
    "analyse_ct",
    "analysis_unavailable",
    "band_masks",
    "find_lungs",
    "lung_slice_mask",
    "lung_volume_ml",
    "score_scan",
    "segment_lesions",
    "segment_lungs",
    "severity_score",
    "zone_map",
]
