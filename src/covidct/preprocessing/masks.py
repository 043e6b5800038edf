"""Binary-mask steps every finder shares: hole filling, the largest component, the body.

One implementation of each (issue 21): `transforms.BodyBox`, the 2D grey lung finder
(`lung_intensity`) and the 3D HU lung finder (`covidct.quant.lungs`) call these.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

IN_PLANE_4 = np.zeros((3, 3, 3), bool)
IN_PLANE_4[1] = ndi.generate_binary_structure(2, 1)
"""Structuring element: 4-connectivity within a slice, none across slices."""


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a 2D mask (H, W), or of every slice of a (z, y, x) mask, in one labelling pass.

    A hole is background (4-connected) that does not reach the image border: the same result as
    ``scipy.ndimage.binary_fill_holes`` per slice, without its iterative dilation.
    """
    mask = np.asarray(mask, bool)
    structure = ndi.generate_binary_structure(2, 1) if mask.ndim == 2 else IN_PLANE_4
    labels, n = ndi.label(~mask, structure)
    outside = np.zeros(n + 1, bool)
    for face in (labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]):
        outside[face.ravel()] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[labels]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a mask (any ndim; face connectivity); empty when none."""
    labels, n = ndi.label(mask)
    if n == 0:
        return np.zeros(np.shape(mask), bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def body_mask(tissue: np.ndarray) -> np.ndarray:
    """The body of one slice (H, W bool): the largest tissue component with its holes (lungs) filled."""
    return fill_holes(largest_component(tissue))
