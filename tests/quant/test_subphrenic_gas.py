"""Gas under the diaphragm is not lung (`covidct.quant.lungs.cut_subphrenic_air`), on a hand-built chest
phantom whose every structure and HU is known: a colon-gas pocket under the left dome touches the left
lung's base through a thin partial-volume bridge (a 2 x 2 pixel column of -600 HU through the 2-slice
diaphragm), the way COVID-CT-MD cap001's splenic flexure joins its left lung (docs/results.md, issue 21).
The gas must leave the lung mask; the lung base, including a deep posterior costophrenic recess that
reaches below the top of the gas, must stay; the same with the volume stored bottom-to-top.

Planted in `covidct.quant.lungs` and caught here (2026-12-07): no cut (4 phantom tests fail, and the
realdata test on cap001), the gas's position
test inverted (4), the slice direction ignored (2: bottom-to-top), the gas pocket reconstructed without
bound and into the lung cores, i.e. through the bridge into the lung (4), a deeper erosion (the unit test)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import plane_ellipse

from covidct.io.volume import Volume
from covidct.quant.lungs import LEFT_LUNG, RIGHT_LUNG, air_cores, lung_volume_ml, segment_lungs

SHAPE = (40, 128, 128)
SPACING = (2.0, 1.5, 1.5)
TOP_TO_BOTTOM = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
"""Direction of a stack whose z + 1 is the inferior slice (x patient left, y posterior)."""
BOTTOM_TO_TOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
LUNG_HU, TISSUE_HU, GAS_HU, BRIDGE_HU = -850.0, 40.0, -980.0, -600.0
LUNG_SLICES = range(2, 27)
"""Both lungs' main body; the slices below are the diaphragm (27-28) and the abdomen."""
DIAPHRAGM_SLICES = range(27, 29)
RECESS_SLICES = range(27, 37)
"""The left lung's posterior costophrenic recess reaches 10 slices (20 mm) below the rest of its base and
holds more lung (~9 ml) than the smallest gas pocket that is cut (`MIN_COMPONENT_ML`)."""
GAS_SLICES = range(29, 39)
BRIDGE_PIXELS = (slice(60, 62), slice(92, 94))
"""(y, x) pixels of the bridge: 2 x 2 pixels (3 x 3 mm) under the left lung's base, above the gas."""
MAX_GAS_IN_LUNG = 0.01
"""Share of the gas pocket's voxels that may still carry a lung label (measured 0.0)."""
MAX_LUNG_CHANGE_ML = 0.1
"""The lungs may differ from those of the same phantom without the bridge by at most this (the bridge's
own voxels and the lung voxels right above it: measured 0.0 ml)."""


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """bool (y, x) ellipse in mm from the image centre, on this phantom's grid (`plane_ellipse`)."""
    return plane_ellipse(SHAPE[1:], SPACING[1:], cy, cx, ry, rx)


def _recess(z: int) -> np.ndarray:
    """The posterior recess on slice ``z``: a posterolateral ellipse narrowing towards its tip."""
    k = z - RECESS_SLICES.start
    return _ellipse(38, 50, 14 - 0.8 * k, 17 - k)


def _phantom(*, bridge: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(z, y, x) HU (z + 1 inferior) and the masks of the left lung (recess included) and the gas.
    Image left is the patient's right lung."""
    body = _ellipse(0, 0, 75, 92)
    right, left = _ellipse(0, -42, 52, 34), _ellipse(0, 42, 52, 34)
    gas_plane = _ellipse(-5, 45, 20, 22)  # under the anterior part of the left dome
    hu = np.full(SHAPE, -1000.0, np.float32)
    parts = {"left": np.zeros(SHAPE, bool), "right": np.zeros(SHAPE, bool), "gas": np.zeros(SHAPE, bool),
             "recess": np.zeros(SHAPE, bool)}
    for z in range(SHAPE[0]):
        plane = np.where(body, TISSUE_HU, -1000.0).astype(np.float32)
        if z in LUNG_SLICES:
            plane[right | left] = LUNG_HU
            parts["right"][z], parts["left"][z] = right, left
        if z in RECESS_SLICES:
            plane[_recess(z)] = LUNG_HU
            parts["left"][z] = parts["recess"][z] = _recess(z)
        if z in GAS_SLICES:
            plane[gas_plane] = GAS_HU
            parts["gas"][z] = gas_plane
        if bridge and z in DIAPHRAGM_SLICES:
            plane[BRIDGE_PIXELS] = BRIDGE_HU
        hu[z] = plane
    return hu, parts


def _segment(hu: np.ndarray, *, bottom_up: bool = False) -> np.ndarray:
    """Lung labels of the phantom in its top-to-bottom order, the volume stored either way."""
    if not bottom_up:
        return segment_lungs(Volume(hu, SPACING, direction=TOP_TO_BOTTOM))
    return segment_lungs(Volume(hu[::-1].copy(), SPACING, direction=BOTTOM_TO_TOP))[::-1]


def test_the_phantom_gas_is_joined_to_the_lung_in_3d():
    """Without the cut the gas would be lung: the bridge joins it to the left lung's air in 3D (so the
    tests below need the cut), and it has no core of its own at a 2 mm erosion."""
    from scipy import ndimage as ndi

    hu, parts = _phantom()
    labels, _ = ndi.label(hu < -320.0)
    assert labels[parts["gas"]].min() == labels[parts["left"]].min() > 0
    cores = air_cores(hu < -320.0, SPACING)
    assert not cores[DIAPHRAGM_SLICES.start:DIAPHRAGM_SLICES.stop][(slice(None), *BRIDGE_PIXELS)].any()


@pytest.mark.parametrize("bottom_up", [False, True], ids=["top-to-bottom", "bottom-to-top"])
def test_gas_under_the_dome_is_not_lung(bottom_up):
    hu, parts = _phantom()
    labels = _segment(hu, bottom_up=bottom_up)
    assert np.mean(labels[parts["gas"]] > 0) <= MAX_GAS_IN_LUNG


@pytest.mark.parametrize("bottom_up", [False, True], ids=["top-to-bottom", "bottom-to-top"])
def test_lung_base_and_deep_recess_are_kept(bottom_up):
    hu, parts = _phantom()
    labels = _segment(hu, bottom_up=bottom_up)
    assert np.all(labels[parts["recess"]] == LEFT_LUNG)
    assert np.all(labels[parts["left"]] == LEFT_LUNG)
    assert np.all(labels[parts["right"]] == RIGHT_LUNG)


@pytest.mark.parametrize("bottom_up", [False, True], ids=["top-to-bottom", "bottom-to-top"])
def test_lungs_are_those_of_the_phantom_without_the_bridge(bottom_up):
    """Only the gas leaves: each lung's volume is that of the same chest whose gas does not touch the lung
    (there the gas was never lung), to within the bridge's few voxels."""
    hu, _ = _phantom()
    apart, _ = _phantom(bridge=False)
    labels, reference = _segment(hu, bottom_up=bottom_up), _segment(apart, bottom_up=bottom_up)
    for lab in (RIGHT_LUNG, LEFT_LUNG):
        assert abs(lung_volume_ml(labels, SPACING, lab) - lung_volume_ml(reference, SPACING, lab)) \
            <= MAX_LUNG_CHANGE_ML


def test_air_cores_erode_by_millimetres_per_axis():
    """A 2 mm erosion: one voxel along 1.5-2 mm axes, two along a 1 mm axis; nothing at the array's edge."""
    mask = np.ones((9, 9, 9), bool)
    coarse = air_cores(mask, (2.0, 1.5, 1.5))
    fine_z = air_cores(mask, (1.0, 1.5, 1.5))
    assert coarse[1:-1, 1:-1, 1:-1].all() and coarse.sum() == 7 ** 3
    assert fine_z[2:-2, 1:-1, 1:-1].all() and fine_z.sum() == 5 * 7 * 7


CAP001 = "covid-ct-md/CAP/cap001"
MAX_REGROWTH_CM2 = 1.0
"""Going inferiorly below the right lung's base, the left lung's area may exceed the smallest area above it
by at most this (before the fix cap001's colon gas made it grow again from 33.8 to 37.1 cm^2 on slices
150-159)."""


@pytest.mark.realdata
def test_cap001_colon_gas_is_not_left_lung(shared_data):
    """COVID-CT-MD cap001: the splenic flexure's gas under the left dome (slices 149-167, 134.7 ml labelled
    left lung before the fix) is gone; the left lung's base narrows to its end instead of staying ~35 cm^2
    wide."""
    from covidct.io import read_volume
    from covidct.quant.analysis import find_lungs
    from covidct.quant.lungs import inferior_step_of

    path = shared_data / CAP001
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    lungs = find_lungs(read_volume(path))
    labels = lungs.labels if inferior_step_of(lungs.grid.direction) > 0 else lungs.labels[::-1]
    pixel_cm2 = lungs.spacing[1] * lungs.spacing[2] / 100.0
    area = {lab: np.count_nonzero((labels == lab).reshape(labels.shape[0], -1), axis=1) * pixel_cm2
            for lab in (RIGHT_LUNG, LEFT_LUNG)}
    right_end = int(np.flatnonzero(area[RIGHT_LUNG])[-1])
    below = area[LEFT_LUNG][right_end:]
    assert np.all(below - np.minimum.accumulate(below) <= MAX_REGROWTH_CM2), np.round(below, 1)
    assert area[LEFT_LUNG][-10:].sum() == 0.0, np.round(area[LEFT_LUNG][-10:], 1)
