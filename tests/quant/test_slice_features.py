"""Lesion-pattern features of one slice: each feature responds to the pattern it names.

Phantoms are the HU chest slices of `test_slice_lesions` (two lungs centred at x = 78 and x = 178,
y = 128; 62 x 38 px half-axes) with ground-glass disks planted where each test needs them.
"""

from __future__ import annotations

import numpy as np
import pytest
from tests.quant.test_slice_lesions import LUNG_CENTRES, _disk, lung_grey, phantom_hu

from covidct.errors import QuantError
from covidct.quant.slice_features import FEATURE_NAMES, slice_features

GGO_HU = -550.0
CONSOLIDATION_HU = -50.0
RADIUS_PX = 9


def features(*centres: tuple[int, int], lesion_hu: float = GGO_HU, seed: int = 0) -> dict[str, float]:
    """Features of the healthy phantom with a lesion disk (``RADIUS_PX``) at each (y, x) centre."""
    hu = phantom_hu(seed=seed)
    lungs = _disk(LUNG_CENTRES[0], 62, 38) | _disk(LUNG_CENTRES[1], 62, 38)
    for centre in centres:
        hu[_disk(centre, RADIUS_PX, RADIUS_PX) & lungs] = lesion_hu
    return dict(zip(FEATURE_NAMES, slice_features(lung_grey(hu)), strict=True))


LATERAL_LEFT = (128, 50)  # 10 px inside the image-left lung's lateral border (x = 40)
CENTRE_LEFT = LUNG_CENTRES[0]
POSTERIOR_LEFT = (172, 78)  # below the lungs' centroid row (y = 128): posterior in axial display
ANTERIOR_LEFT = (84, 78)
LATERAL_RIGHT = (128, 206)


def test_healthy_lungs_have_no_lesion_features() -> None:
    f = features()
    assert len(f) == len(FEATURE_NAMES) == 13
    for name in ("ggo_fraction", "consolidation_fraction", "peripheral_lesion", "central_lesion",
                 "posterior_lesion", "anterior_lesion", "bilateral_lesion", "lesion_foci"):
        assert f[name] < 0.01, name
    assert abs(f["hu_p50"]) < 0.05  # median lung at the parenchyma anchor (-850 HU)


def test_ground_glass_and_consolidation_land_in_their_own_feature() -> None:
    ggo, cons = features(CENTRE_LEFT), features(CENTRE_LEFT, lesion_hu=CONSOLIDATION_HU)
    assert ggo["ggo_fraction"] > 5 * ggo["consolidation_fraction"]
    assert cons["consolidation_fraction"] > 2 * cons["ggo_fraction"]
    assert ggo["lesion_score"] > features()["lesion_score"] + 0.2


def test_peripheral_and_central_lesions_are_told_apart() -> None:
    outer, inner = features(LATERAL_LEFT), features(CENTRE_LEFT)
    assert outer["peripheral_lesion"] > 2 * outer["central_lesion"]
    assert inner["central_lesion"] > 2 * inner["peripheral_lesion"]


def test_posterior_and_anterior_lesions_are_told_apart() -> None:
    back, front = features(POSTERIOR_LEFT), features(ANTERIOR_LEFT)
    assert back["posterior_lesion"] > 0.01 and back["anterior_lesion"] < 0.2 * back["posterior_lesion"]
    assert front["anterior_lesion"] > 0.01 and front["posterior_lesion"] < 0.2 * front["anterior_lesion"]


def test_bilateral_needs_a_lesion_in_both_lungs_and_foci_are_counted() -> None:
    one, both = features(LATERAL_LEFT), features(LATERAL_LEFT, LATERAL_RIGHT)
    assert one["bilateral_lesion"] < 0.002 < both["bilateral_lesion"]
    assert both["lesion_foci"] > one["lesion_foci"] > 0.0


@pytest.mark.parametrize("grey", [np.zeros((64, 64)), np.full((64, 64), 255.0)])
def test_a_slice_without_lungs_is_a_clear_error(grey: np.ndarray) -> None:
    with pytest.raises(QuantError, match="lung|uniform"):
        slice_features(grey)
