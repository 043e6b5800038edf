"""Lung labels at the volume's resolution (`CTAnalysis.lung_labels_full`, `refine_lung_boundary`): the
outline follows the pleura pixel by pixel, not in analysis-grid blocks, and nothing inside moves."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.quant.analysis import analyse_ct, refine_lung_boundary
from covidct.quant.lungs import AIR_THRESHOLD_HU
from covidct.synthetic import make_phantom

FACTOR = 2
LUNG_HU, WALL_HU = -850.0, 40.0


def disk_volume(radius_px: float = 21.5, shape=(3, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """(hu, true lung) at full resolution: a disk of lung in soft tissue, off the block grid."""
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    disk = (yy - 31.3) ** 2 + (xx - 32.6) ** 2 <= radius_px ** 2
    truth = np.broadcast_to(disk, shape).copy()
    return np.where(truth, LUNG_HU, WALL_HU).astype(np.float32), truth


def coarse_labels(truth: np.ndarray, label: int = 1) -> np.ndarray:
    """Analysis-grid labels: a block is lung when most of its pixels are."""
    z, y, x = truth.shape
    share = truth.reshape(z, y // FACTOR, FACTOR, x // FACTOR, FACTOR).mean(axis=(2, 4))
    return np.where(share >= 0.5, label, 0).astype(np.uint8)


def repeated(labels: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(labels, FACTOR, axis=1), FACTOR, axis=2)


def test_the_boundary_follows_the_pixels():
    hu, truth = disk_volume()
    labels = coarse_labels(truth)
    full = repeated(labels)
    before = np.count_nonzero((full > 0) != truth)
    refine_lung_boundary(full, labels, hu, FACTOR)
    assert before > 0
    assert np.array_equal(full > 0, truth)  # a clean two-level image: every pixel right


def test_labels_sides_and_interior_are_kept():
    hu, truth = disk_volume()
    left = truth.copy()
    left[:, :, :33] = False
    labels = coarse_labels(truth) + coarse_labels(left)  # 1 on the image left half, 2 on the right
    hu[:, 30:34, 30:34] = 60.0  # a vessel inside the lung, away from the boundary
    full = repeated(labels)
    refine_lung_boundary(full, labels, hu, FACTOR)
    assert (full[:, 30:34, 30:34] > 0).all()
    assert set(np.unique(full[:, :, :30][truth[:, :, :30]])) == {1}
    assert set(np.unique(full[:, :, 36:][truth[:, :, 36:]])) == {2}


def test_a_dense_lung_block_at_the_pleura_stays_lung():
    hu, truth = disk_volume()
    labels = coarse_labels(truth)
    y, x = 5, 16  # a boundary lung block (rows 10-11, columns 32-33 at full resolution)
    assert labels[1, y, x] == 1 and labels[1, y - 1, x] == 0
    hu[1, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2] = -100.0  # consolidation the lung closing joined
    full = repeated(labels)
    refine_lung_boundary(full, labels, hu, FACTOR)
    assert (full[1, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2] == 1).all()
    assert (full[1][truth[1] & (hu[1] < AIR_THRESHOLD_HU)] == 1).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_phantom_lungs_at_full_resolution_beat_the_repeated_grid(seed):
    phantom = make_phantom("Normal", shape=(20, 256, 256), spacing=(2.5, 0.75, 0.75), seed=seed)
    analysis = analyse_ct(phantom.volume)
    assert analysis.factor == FACTOR
    full = analysis.lung_labels_full()
    blocky = analysis._to_volume_grid(analysis.lung_labels)
    truth = phantom.lung_mask
    wrong_full = np.count_nonzero((full > 0) != (truth > 0))
    wrong_blocky = np.count_nonzero((blocky > 0) != (truth > 0))
    assert wrong_full < 0.5 * wrong_blocky
    for side in (1, 2):
        both = np.count_nonzero((full == side) & (truth == side))
        assert 2 * both / (np.count_nonzero(full == side) + np.count_nonzero(truth == side)) >= 0.98
    assert analysis.lung_labels_full() is full  # computed once per study
    # the analysis grid itself (the reported volumes) is unchanged by the refinement
    assert np.array_equal(analysis._to_volume_grid(analysis.lung_labels), blocky)
