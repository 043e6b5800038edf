"""The HU bands of the lesions: the one definition both the 3D (`quant.lesions`) and the 2D grey
(`quant.slice_lesions`) paths use.

=================  ======================  ==================================================
band               HU                      source
=================  ======================  ==================================================
ground glass       -700 <= HU < -300       Fleischner glossary ranges (Hansell et al. 2008)
consolidation      -300 <= HU <= +100      above it: bone, calcification, contrast in vessels
=================  ======================  ==================================================
"""

from __future__ import annotations

import numpy as np

GGO_HU = (-700.0, -300.0)
"""Ground-glass opacity band [low, high) in HU (Hansell et al., Fleischner glossary ranges)."""
CONSOLIDATION_HU = (-300.0, 100.0)
"""Consolidation band [low, high] in HU; above it are bone and contrast-filled vessels."""


def in_ggo(hu: np.ndarray, band: tuple[float, float] = GGO_HU) -> np.ndarray:
    """bool, same shape: ``band[0] <= hu < band[1]`` (default `GGO_HU`)."""
    return (hu >= band[0]) & (hu < band[1])


def in_consolidation(hu: np.ndarray, band: tuple[float, float] = CONSOLIDATION_HU) -> np.ndarray:
    """bool, same shape: ``band[0] <= hu <= band[1]`` (default `CONSOLIDATION_HU`)."""
    return (hu >= band[0]) & (hu <= band[1])


def band_masks(hu: np.ndarray, ggo: tuple[float, float] = GGO_HU,
               consolidation: tuple[float, float] = CONSOLIDATION_HU) -> tuple[np.ndarray, np.ndarray]:
    """(ground glass, consolidation) bool masks of an HU array (any shape); they never overlap when
    the ground-glass band ends where the consolidation band starts (the defaults)."""
    return in_ggo(hu, ggo), in_consolidation(hu, consolidation)


def in_lesion_bands(hu: np.ndarray) -> np.ndarray:
    """bool, same shape: HU in either band (ground glass or consolidation)."""
    ggo, consolidation = band_masks(hu)
    return ggo | consolidation
