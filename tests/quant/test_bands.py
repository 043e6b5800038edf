"""The ground-glass / consolidation split on a phantom whose blocks have known HU (issue 21, item 6).

Each block sits inside a lung, far from the mediastinum, and holds one HU value 50 HU inside (or outside)
a band edge, so moving any edge of `covidct.quant.bands` by 100 HU changes what one block is called.
"""

from __future__ import annotations

import numpy as np
import pytest

from covidct.io.volume import Volume
from covidct.quant import analyse_ct
from covidct.quant.analysis import LESION_BACKGROUND, LESION_CONSOLIDATION, LESION_GGO, QuantParams
from covidct.quant.bands import CONSOLIDATION_HU, GGO_HU, band_masks
from covidct.quant.lesions import LesionParams

SHAPE = (32, 160, 160)
SPACING = (2.5, 1.4, 1.4)  # analysis grid = the volume's grid
BODY_HU, LUNG_HU, AIR_HU = 40.0, -850.0, -1000.0
NOISE_HU = 5.0
BLOCK_PX, BLOCK_SLICES = 14, 8  # about 20 x 20 x 20 mm
BLOCKS = [  # (HU, expected label, lung, z0, y0)
    (-750.0, LESION_BACKGROUND, "right", 5, 45),   # below ground glass (GGO low edge -700)
    (-650.0, LESION_GGO, "right", 18, 45),         # ground glass near its low edge
    (-350.0, LESION_GGO, "right", 5, 95),          # ground glass near its high edge (-300)
    (-250.0, LESION_CONSOLIDATION, "left", 5, 45),  # consolidation near its low edge
    (50.0, LESION_CONSOLIDATION, "left", 18, 45),   # consolidation near its high edge (+100)
    (150.0, LESION_BACKGROUND, "left", 5, 95),      # above consolidation (bone, contrast)
]
BLOCK_X = {"right": 30, "left": 116}  # image left = patient right for the default direction
MIN_SHARE = 0.9
"""At least this share of a block's core gets its expected label."""


def band_phantom(seed: int = 0) -> Volume:
    """A body (ellipse, +40 HU) holding two lungs (-850 HU) with one HU block per `BLOCKS` row."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu = np.full(SHAPE, AIR_HU, np.float32)
    body = ((y - 80) / 70.0) ** 2 + ((x - 80) / 76.0) ** 2 <= 1.0
    hu[:, body[0]] = BODY_HU
    in_z = (z >= 2) & (z < SHAPE[0] - 2)
    for cx in (47, 113):
        lung = in_z & (((y - 80) / 58.0) ** 2 + ((x - cx) / 28.0) ** 2 <= 1.0)
        hu[lung] = LUNG_HU
    for value, _, side, z0, y0 in BLOCKS:
        x0 = BLOCK_X[side]
        hu[z0 : z0 + BLOCK_SLICES, y0 : y0 + BLOCK_PX, x0 : x0 + BLOCK_PX] = value
    hu += np.random.default_rng(seed).normal(0.0, NOISE_HU, SHAPE).astype(np.float32)
    return Volume(hu, SPACING)


def _core(side: str, z0: int, y0: int) -> tuple[slice, slice, slice]:
    """The block without a 2-voxel margin in y/x and 1 slice in z (partial volume of the opening)."""
    x0 = BLOCK_X[side]
    return (slice(z0 + 1, z0 + BLOCK_SLICES - 1), slice(y0 + 2, y0 + BLOCK_PX - 2),
            slice(x0 + 2, x0 + BLOCK_PX - 2))


@pytest.fixture(scope="module")
def analysis():
    # isolated solid cubes are round solid nodules to the nodule rule (tests/quant/test_round_nodules.py);
    # this test is about the bands, so the rule is off here
    return analyse_ct(band_phantom(), QuantParams(lesions=LesionParams(round_nodule_min_roundness=0.0)))


@pytest.mark.parametrize(("value", "expected", "side", "z0", "y0"), BLOCKS)
def test_each_block_gets_the_label_of_its_band(analysis, value, expected, side, z0, y0):
    labels = analysis.lesion_labels()[_core(side, z0, y0)]
    share = float(np.mean(labels == expected))
    assert share >= MIN_SHARE, f"{value} HU block: {share:.0%} labelled {expected}"


def test_volumes_split_by_band(analysis):
    """GGO and consolidation volumes are those of their two blocks (20 x 19.6 x 19.6 mm = 7.7 ml each)."""
    block_ml = BLOCK_SLICES * SPACING[0] * (BLOCK_PX * SPACING[1]) ** 2 / 1000.0
    assert analysis.report.ggo_ml == pytest.approx(2 * block_ml, rel=0.15)
    assert analysis.report.consolidation_ml == pytest.approx(2 * block_ml, rel=0.15)
    # sides: the GGO blocks are in the right lung, the consolidation blocks in the left
    assert analysis.report.lesion_ml["right"] == pytest.approx(analysis.report.ggo_ml, rel=0.05)
    assert analysis.report.lesion_ml["left"] == pytest.approx(analysis.report.consolidation_ml, rel=0.05)


def test_band_edges_exactly():
    hu = np.array([-700.01, -700.0, -300.01, -300.0, 100.0, 100.01], np.float32)
    ggo, cons = band_masks(hu)
    assert ggo.tolist() == [False, True, True, False, False, False]
    assert cons.tolist() == [False, False, False, True, True, False]
    assert GGO_HU == (-700.0, -300.0) and CONSOLIDATION_HU == (-300.0, 100.0)
