"""The tunable steps of the lesion segmentation and the per-slice score, on small hand-made arrays.

Each test pins one step's geometry or arithmetic exactly, so a planted bug (the posterior axis read
backwards, the rim measured from the wrong edge, a component-size filter that is skipped, a z window
that is not centred, a band argument ignored) fails it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from covidct.errors import QuantError
from covidct.io.volume import Volume
from covidct.quant.analysis import SliceScoreParams, slice_scores
from covidct.quant.bands import band_masks
from covidct.quant.lesions import (
    LesionParams,
    drop_nodules,
    drop_posterior_rim,
    lesions_from_opened,
    opened_lung_hu,
    posterior_depth_mm,
    segment_lesions,
    y_points_posterior,
)

STEP_MM = 2.0
LUNG_ROWS = slice(2, 10)  # rows 2..9 of 14 are lung (not symmetric): 16 mm; row 9 is the posterior edge


def _lung_block() -> np.ndarray:
    lung = np.zeros((2, 14, 6), bool)
    lung[:, LUNG_ROWS, 1:5] = True
    return lung


def test_posterior_depth_counts_lung_to_the_posterior_edge():
    depth = posterior_depth_mm(_lung_block(), STEP_MM, posterior_down=True)
    column = depth[0, :, 2]
    assert column[9] == STEP_MM  # the posterior edge voxel itself
    assert column[2] == 8 * STEP_MM  # the anterior edge: the whole column of lung behind it
    np.testing.assert_array_equal(column[LUNG_ROWS], STEP_MM * np.arange(8, 0, -1))
    assert not depth[~_lung_block()].any()


def test_posterior_depth_follows_the_direction():
    lung = _lung_block()
    down = posterior_depth_mm(lung, STEP_MM, posterior_down=True)
    up = posterior_depth_mm(lung[:, ::-1], STEP_MM, posterior_down=False)
    np.testing.assert_array_equal(up[:, ::-1], down)


def test_posterior_rim_drops_only_the_dependent_rows():
    lung = _lung_block()
    kept = drop_posterior_rim(lung, lung, STEP_MM, 3 * STEP_MM, posterior_down=True)
    assert not kept[:, 7:10].any()  # the three posterior rows (depth 2, 4, 6 mm <= 6 mm) go
    assert kept[:, 2:7, 1:5].all()  # the anterior five stay
    flipped = drop_posterior_rim(lung, lung, STEP_MM, 3 * STEP_MM, posterior_down=False)
    assert not flipped[:, 2:5].any() and flipped[:, 5:10, 1:5].all()
    assert drop_posterior_rim(lung, lung, STEP_MM, 0.0, posterior_down=True) is lung


def test_y_axis_direction():
    assert y_points_posterior(np.eye(3))
    assert not y_points_posterior(np.diag([1.0, -1.0, -1.0]))


def _lesion_phantom() -> tuple[Volume, np.ndarray]:
    """A 20 x 64 x 64 lung box (2 x 1.5 x 1.5 mm) at -850 HU with a 12 mm GGO cube (-500 HU) in its
    anterior half and a 6 mm thick dependent band (-600 HU) along its posterior edge; lung labels."""
    hu = np.full((20, 64, 64), 40.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    labels[2:18, 8:56, 8:56] = 1
    hu[labels > 0] = -850.0
    hu[6:12, 16:24, 24:32] = -500.0  # anterior lesion, 12 x 12 x 12 mm
    hu[2:18, 52:56, 8:56] = -600.0  # dependent band, 4 rows = 6 mm deep
    return Volume(hu, (2.0, 1.5, 1.5)), labels


def test_lesions_from_opened_is_segment_lesions():
    volume, labels = _lesion_phantom()
    params = LesionParams(opening_box_mm=(4.0, 4.5, 4.5), hilar_distance_mm=0.0, min_lesion_ml=0.05)
    whole = segment_lesions(volume, labels, params)
    opened = opened_lung_hu(volume.array, labels > 0, volume.spacing, params.opening_box_mm)
    direct = lesions_from_opened(opened, volume.array, labels, volume.spacing, params, posterior_down=True)
    np.testing.assert_array_equal(whole.ggo, direct.ggo)
    np.testing.assert_array_equal(whole.consolidation, direct.consolidation)


def test_posterior_rim_removes_the_dependent_band_and_keeps_the_lesion():
    volume, labels = _lesion_phantom()
    base = LesionParams(opening_box_mm=(4.0, 4.5, 4.5), hilar_distance_mm=0.0, min_lesion_ml=0.05,
                        edge_rings=0)
    without = segment_lesions(volume, labels, base).any
    assert without[6:12, 16:24, 24:32].all() and without[4:16, 52:56, 12:52].all()
    rim = segment_lesions(volume, labels, dataclasses.replace(base, posterior_rim_mm=7.0)).any
    assert rim[6:12, 16:24, 24:32].all()  # the anterior lesion stays
    assert not rim[:, 50:, :].any()  # the dependent band goes


def test_ggo_band_argument_is_used():
    hu = np.array([-760.0, -720.0, -680.0, -320.0, -280.0, 90.0, 120.0])
    ggo, cons = band_masks(hu)
    np.testing.assert_array_equal(ggo, [False, False, True, True, False, False, False])
    np.testing.assert_array_equal(cons, [False, False, False, False, True, True, False])
    wide, _ = band_masks(hu, ggo=(-750.0, -300.0))
    np.testing.assert_array_equal(wide, [False, True, True, True, False, False, False])


def test_slice_scores_area_fraction_size_filter_and_window():
    lungs = np.zeros((5, 20, 20), np.uint8)
    lungs[:, 2:18, 2:18] = 1  # 256 px of lung per slice
    lesion = np.zeros(lungs.shape, bool)
    lesion[2, 4:12, 4:12] = True  # 64 px focus in slice 2
    lesion[2, 15, 15] = True  # one stray pixel (1 mm^2 at 1 mm pixels)
    lesion[4, 5:7, 5:7] = True  # 4 px focus in slice 4
    spacing = (2.0, 1.0, 1.0)
    plain = slice_scores(lungs, lesion, spacing, SliceScoreParams(z_window=1))
    np.testing.assert_allclose(plain, [0, 0, 65 / 256, 0, 4 / 256])
    filtered = slice_scores(lungs, lesion, spacing, SliceScoreParams(min_area_mm2=5.0, z_window=1))
    np.testing.assert_allclose(filtered, [0, 0, 64 / 256, 0, 0])
    smooth = slice_scores(lungs, lesion, spacing, SliceScoreParams(z_window=3))
    np.testing.assert_allclose(smooth, [0, 65 / 768, 65 / 768, 69 / 768, 8 / 768])  # edges repeat themselves


def test_slice_scores_refuse_an_even_window():
    lungs = np.ones((3, 4, 4), np.uint8)
    with pytest.raises(QuantError, match="odd"):
        slice_scores(lungs, lungs > 0, (1.0, 1.0, 1.0), SliceScoreParams(z_window=2))


def test_nodule_rule_drops_small_solid_components_only():
    hu = np.full((24, 48, 48), -850.0, np.float32)
    mask = np.zeros(hu.shape, bool)
    mask[2:6, 4:8, 4:8] = True  # 64 voxels, solid: a nodule
    hu[2:6, 4:8, 4:8] = -50.0
    mask[2:6, 20:24, 20:24] = True  # 64 voxels, ground glass: kept
    hu[2:6, 20:24, 20:24] = -550.0
    mask[10:22, 10:40, 10:40] = True  # 10,800 voxels, solid: consolidation, too large for a nodule
    hu[10:22, 10:40, 10:40] = -50.0
    dense = band_masks(hu)[1]
    voxel_ml = 0.01
    kept = drop_nodules(mask, dense, voxel_ml, max_ml=1.0)  # the small ones are 0.64 ml, the block 108 ml
    assert not kept[2:6, 4:8, 4:8].any()
    np.testing.assert_array_equal(kept[:, 10:, 10:], mask[:, 10:, 10:])
    assert kept[2:6, 20:24, 20:24].all()
    assert drop_nodules(mask, dense, voxel_ml, max_ml=0.5)[2:6, 4:8, 4:8].all()  # 0.64 ml > 0.5 ml
    assert drop_nodules(mask, dense, voxel_ml, max_ml=0.0) is mask


def test_segment_lesions_applies_the_nodule_rule():
    volume, labels = _lesion_phantom()
    volume.array[10:14, 30:36, 40:46] = -50.0  # solid, 8 x 9 x 9 mm = 0.65 ml
    base = LesionParams(opening_box_mm=(4.0, 4.5, 4.5), hilar_distance_mm=0.0, min_lesion_ml=0.05,
                        round_nodule_min_roundness=0.0)  # the solid cube is also a round nodule
    assert segment_lesions(volume, labels, base).consolidation[10:14, 30:36, 40:46].all()
    ruled = segment_lesions(volume, labels, dataclasses.replace(base, nodule_max_ml=1.0))
    assert not ruled.any[10:14, 30:36, 40:46].any()
    assert ruled.ggo[6:12, 16:24, 24:32].all()  # the ground-glass lesion (1.7 ml) stays


def test_analyse_ct_slice_score_is_the_windowed_slice_involvement():
    from scipy import ndimage as ndi

    from covidct.quant.analysis import SLICE_Z_WINDOW, analyse_ct
    from covidct.synthetic import add_lesion, make_phantom

    phantom = add_lesion(make_phantom("Normal", shape=(24, 96, 96), spacing=(2.5, 3.0, 3.0), seed=0),
                         side="left", zone="middle")
    result = analyse_ct(phantom.volume)
    assert SLICE_Z_WINDOW > 1
    expected = ndi.uniform_filter1d(result.slice_involvement, SLICE_Z_WINDOW, mode="nearest")
    np.testing.assert_allclose(result.slice_score, expected)
    assert result.slice_involvement.max() > 0
    assert result.to_dict()["slice_score"] == [round(float(v), 5) for v in result.slice_score]
