"""Which slices show lung: the slice models score only those; the others are non-informative."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_LUNG_AREA_MM2 = 100.0
"""A slice shows lung when its lung mask covers at least this area (1 cm^2)."""


def lung_slice_mask(
    lung_labels: np.ndarray, spacing: Sequence[float], *, min_area_mm2: float = MIN_LUNG_AREA_MM2
) -> np.ndarray:
    """(S,) bool: slices of a lung label volume (z, y, x) (`segment_lungs`) whose lung area, at
    pixel ``spacing`` (z, y, x) mm, is at least ``min_area_mm2``."""
    labels = np.asarray(lung_labels)
    pixel_mm2 = float(spacing[1]) * float(spacing[2])
    return np.count_nonzero(labels.reshape(labels.shape[0], -1), axis=1) * pixel_mm2 >= min_area_mm2
