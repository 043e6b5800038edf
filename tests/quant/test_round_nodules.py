"""The round solid nodule rule (`drop_round_nodules`): a solitary compact round opacity with a solid core
is a nodule, not pneumonia; patchy, elongated, ground-glass or mass-sized opacities stay.

Shapes are drawn on a 1.5 x 1.0 x 1.0 mm grid (unequal spacing: an axis read in voxels instead of mm
shows as a flattened 'ball')."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.io.volume import Volume
from covidct.quant.lesions import (
    ROUND_NODULE_MAX_DIAMETER_MM,
    LesionParams,
    drop_round_nodules,
    ellipsoid_shape,
    segment_lesions,
)

SPACING = (1.5, 1.0, 1.0)
SHAPE = (40, 90, 90)
ROUNDNESS = 0.6


def ball(centre_mm, radius_mm, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    grid = np.indices(shape).astype(float) * np.asarray(spacing, float)[:, None, None, None]
    d2 = sum((grid[a] - centre_mm[a]) ** 2 for a in range(3))
    return d2 <= radius_mm ** 2


def rod(shape=SHAPE) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[18:22, 40:44, 10:80] = True  # 6 x 4 x 70 mm: a vessel-like tube
    return out


def test_ellipsoid_shape_of_a_ball_and_a_rod():
    labels = ball((30.0, 30.0, 30.0), 8.0).astype(np.int32) + 2 * rod()
    roundness, fill, diameter = ellipsoid_shape(labels, 2, SPACING)
    assert roundness[1] == pytest.approx(1.0, abs=0.08)
    assert fill[1] == pytest.approx(1.0, abs=0.1)
    assert diameter[1] == pytest.approx(16.0, abs=1.5)
    assert roundness[2] < 0.15 and diameter[2] == pytest.approx(2 * 70.0 * np.sqrt(5.0 / 12.0), rel=0.05)
    assert roundness[0] == fill[0] == diameter[0] == 0.0


def test_solid_round_nodule_goes_and_the_rest_stays():
    nodule = ball((30.0, 25.0, 25.0), 9.0)          # 18 mm solid nodule
    ggo_ball = ball((30.0, 25.0, 65.0), 9.0)        # 18 mm rounded ground glass (COVID-19 morphology)
    mass = ball((30.0, 65.0, 30.0), 19.0)           # 38 mm: a mass, beyond the nodule size
    tube = rod()
    mask = nodule | ggo_ball | mass | tube
    dense = nodule | mass | tube
    kept = drop_round_nodules(mask, dense, SPACING, ROUNDNESS)
    assert not (kept & nodule).any()
    assert np.array_equal(kept & ~nodule, mask & ~nodule)
    assert drop_round_nodules(mask, dense, SPACING, 0.0) is mask  # 0 = off


def test_a_vessel_junction_is_round_but_not_filled_and_stays():
    """Three orthogonal 3 mm rods, 24 mm long (a branching vessel): equal axes, little fill."""
    junction = np.zeros(SHAPE, bool)
    junction[12:28, 44:47, 44:47] = True   # 16 slices x 1.5 mm = 24 mm along z
    junction[19:21, 33:57, 44:47] = True
    junction[19:21, 44:47, 33:57] = True
    roundness, fill, diameter = ellipsoid_shape(junction.astype(np.int32), 1, SPACING)
    assert roundness[1] >= ROUNDNESS and diameter[1] <= ROUND_NODULE_MAX_DIAMETER_MM and fill[1] < 0.5
    assert drop_round_nodules(junction, junction, SPACING, ROUNDNESS).sum() == junction.sum()


def test_part_solid_nodule_goes_when_its_core_is_solid_enough():
    outer = ball((30.0, 45.0, 45.0), 10.0)
    core = ball((30.0, 45.0, 45.0), 7.5)  # (7.5/10)^3 = 42 % of the volume solid
    assert not drop_round_nodules(outer, core, SPACING, ROUNDNESS).any()
    faint = ball((30.0, 45.0, 45.0), 5.0)  # 12.5 % solid: ground glass with a dot
    assert drop_round_nodules(outer, faint, SPACING, ROUNDNESS).sum() == outer.sum()


def test_the_size_limit_is_in_millimetres():
    radius = ROUND_NODULE_MAX_DIAMETER_MM / 2
    small = ball((30.0, 45.0, 45.0), radius - 2.0)
    large = ball((30.0, 45.0, 45.0), radius + 2.0)
    assert not drop_round_nodules(small, small, SPACING, ROUNDNESS).any()
    assert drop_round_nodules(large, large, SPACING, ROUNDNESS).sum() == large.sum()


def test_segment_lesions_applies_the_rule():
    """End to end on a lung box: the solid nodule is a lesion with the rule off and gone with it on;
    an irregular consolidation (an L-shaped block) is kept either way."""
    hu = np.full(SHAPE, 40.0, np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:38, 5:85, 5:85] = 1
    hu[labels > 0] = -850.0
    nodule = ball((30.0, 25.0, 25.0), 9.0)
    hu[nodule] = -50.0
    block = np.zeros(SHAPE, bool)
    block[8:30, 50:62, 40:75] = True
    block[8:30, 50:75, 63:75] = True
    hu[block] = -100.0
    volume = Volume(hu, SPACING)
    off = segment_lesions(volume, labels, LesionParams(round_nodule_min_roundness=0.0)).any
    on = segment_lesions(volume, labels, LesionParams(round_nodule_min_roundness=ROUNDNESS)).any
    assert (off & nodule).sum() > 0.8 * nodule.sum()
    assert not (on & nodule).any()
    assert (on & block).sum() == (off & block).sum() > 0.8 * block.sum()


def test_filter_components_drops_small_components_and_keeps_whole_ones():
    """The size rule of the one component filter: a 4-voxel speck goes, a touching pair stays whole."""
    from covidct.quant.lesions import ComponentRules, filter_components

    mask = np.zeros((6, 20, 20), bool)
    mask[1, 2:4, 2:4] = True               # 4 voxels
    mask[2:5, 8:12, 8:12] = True           # 48 voxels
    mask[2:5, 12:14, 8:10] = True          # + 12 touching: one component of 60
    kept = filter_components(mask, np.zeros_like(mask), SPACING, ComponentRules(min_voxels=5))
    assert not kept[1].any()
    assert np.array_equal(kept[2:5], mask[2:5])
    at_size = filter_components(mask, mask, SPACING, ComponentRules(min_voxels=60))
    assert np.array_equal(at_size[2:5], mask[2:5])
    assert np.array_equal(filter_components(mask, mask, SPACING, ComponentRules(min_voxels=61)),
                          np.zeros_like(mask))
