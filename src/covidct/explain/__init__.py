"""Explanations: heatmap methods, sanity checks, lung masks, quantification, embeddings.

Public API: `explain`, `Explanation`, `write_explanation`, `segment_lungs`, `lung_volume_ml`,
`analyse_ct` / `CTAnalysis` (quantitative CT from HU, no weights), `segment_lesions`,
`quantify_abnormality`, `describe`, `compute_heatmap`, `list_methods`, `get_method`,
`sanity_checks`, `overlay_rgb`, `window_to_uint8`.
"""

from covidct.explain.ct_analysis import CTAnalysis, analyse_ct
from covidct.explain.lesions import LesionMasks, segment_lesions
from covidct.explain.lungs import LEFT_LUNG, RIGHT_LUNG, lung_volume_ml, segment_lungs
from covidct.explain.methods import HeatmapResult, compute_heatmap, get_method, list_methods
from covidct.explain.overlay import overlay_rgb, window_to_uint8
from covidct.explain.pipeline import Explanation, explain
from covidct.explain.quantify import Quantification, describe, quantify_abnormality
from covidct.explain.report import write_explanation
from covidct.explain.sanity import SanityReport, sanity_checks

__all__ = [
    "CTAnalysis",
    "LesionMasks",
    "analyse_ct",
    "segment_lesions",
    "LEFT_LUNG",
    "RIGHT_LUNG",
    "Explanation",
    "HeatmapResult",
    "Quantification",
    "SanityReport",
    "compute_heatmap",
    "describe",
    "explain",
    "get_method",
    "list_methods",
    "lung_volume_ml",
    "overlay_rgb",
    "quantify_abnormality",
    "sanity_checks",
    "segment_lungs",
    "window_to_uint8",
    "write_explanation",
]
