"""In-plane Euclidean distance transforms: the one place the quantitative CT computes distances.

Every distance the analysis needs (the lung closing, the periphery, the distance to the mediastinum)
is a 2D distance within each axial slice. The ``edt`` package's transform gives the same distances as
``scipy.ndimage.distance_transform_edt`` (float32 instead of float64) in about half its time
(docs/results.md, issue 21).
"""

from __future__ import annotations

import edt
import numpy as np


def plane_distance_sq(plane: np.ndarray, pixel_mm: tuple[float, float], *,
                      outside_is_background: bool = False) -> np.ndarray:
    """Squared distance (mm^2) of every True pixel of a 2D bool mask to the nearest False pixel.

    float32 (y, x), 0 on False pixels. By default the image border is *not* background (as in
    ``scipy.ndimage.distance_transform_edt``; the mask needs a False pixel); with
    ``outside_is_background`` everything beyond the image is (as if padded with False).
    """
    anisotropy = (float(pixel_mm[0]), float(pixel_mm[1]))
    return edt.edtsq(np.ascontiguousarray(plane, bool), anisotropy=anisotropy,
                     black_border=outside_is_background, parallel=1)


def in_plane_distance_mm(mask: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Per slice, the distance (mm) of every True pixel to the nearest False pixel of its slice.

    Args:
        mask: bool (z, y, x).
        pixel_mm: (y, x) pixel size in mm.

    Returns:
        float32 (z, y, x): 0 on False pixels; the image border is *not* background. A slice that is
        True everywhere has no background: its distances are `numpy.inf`.
    """
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, np.float32)
    for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        if mask[z].all():
            out[z] = np.inf
            continue
        out[z] = np.sqrt(plane_distance_sq(mask[z], pixel_mm))
    return out
