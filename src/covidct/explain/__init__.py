"""Explanations of model predictions: heatmap methods, sanity checks, overlays, embeddings.

Lungs, lesions and their scores are quantitative CT (`covidct.quant`); `explain` measures a heatmap
in the regions of the study's `covidct.quant.CTAnalysis`.

Public API: `explain`, `Explanation`, `write_explanation`, `compute_heatmap`, `list_methods`,
`get_method`, `sanity_checks`, `overlay_rgb`, `window_to_uint8`.
"""

from covidct.explain.methods import HeatmapResult, compute_heatmap, get_method, list_methods
from covidct.explain.overlay import overlay_rgb, window_to_uint8
from covidct.explain.pipeline import Explanation, explain
from covidct.explain.report import write_explanation
from covidct.explain.sanity import SanityReport, sanity_checks

__all__ = [
    "Explanation",
    "HeatmapResult",
    "SanityReport",
    "compute_heatmap",
    "explain",
    "get_method",
    "list_methods",
    "overlay_rgb",
    "sanity_checks",
    "window_to_uint8",
    "write_explanation",
]
