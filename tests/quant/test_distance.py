"""The fast in-plane distance steps give what scipy's reference operations give (issue 21 speed-up)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from covidct.quant.distance import in_plane_distance_mm, plane_distance_sq
from covidct.quant.lesions import EDGE_RING, grow_in_plane, mediastinum_distance_mm
from covidct.quant.lungs import _closing_per_slice
from covidct.quant.regions import PERIPHERAL_FRACTION, peripheral_map

PIXEL_MM = (0.9, 1.6)
"""Deliberately unequal (y, x) pixel sizes: a swapped axis shows."""


def blobs(shape=(6, 48, 56), seed=0, fill=0.06, smooth=2.0) -> np.ndarray:
    """Random smooth bool blobs (z, y, x), every slice with some True and some False pixels."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), (0, smooth, smooth))
    mask = field > np.quantile(field, 1 - fill * 4)
    mask[:, 0, :] = False
    return mask


def reference_closing(mask: np.ndarray, radius_mm: float, pixel_mm) -> np.ndarray:
    """Disk closing per slice with scipy's distance transform (the previous implementation)."""
    pad = int(np.ceil(radius_mm / min(pixel_mm))) + 1
    out = mask.copy()
    for z in range(mask.shape[0]):
        padded = np.pad(mask[z], pad)
        dilated = ndi.distance_transform_edt(~padded, sampling=pixel_mm) <= radius_mm
        closed = ndi.distance_transform_edt(dilated, sampling=pixel_mm) > radius_mm
        out[z] |= closed[pad:-pad, pad:-pad]
    return out


def test_in_plane_distance_matches_scipy_per_slice():
    mask = blobs()
    got = in_plane_distance_mm(mask, PIXEL_MM)
    for z in range(mask.shape[0]):
        want = ndi.distance_transform_edt(mask[z], sampling=PIXEL_MM)
        np.testing.assert_allclose(got[z], want, rtol=1e-5, atol=1e-4)
    assert got.dtype == np.float32


def test_in_plane_distance_is_per_slice_and_inf_without_background():
    mask = np.zeros((3, 10, 12), bool)
    mask[0, 2:5, 3:9] = True   # slice 0: a bar
    mask[1] = True             # slice 1: no background at all
    got = in_plane_distance_mm(mask, PIXEL_MM)
    assert np.isinf(got[1]).all()
    # slice 0 is not influenced by slice 1's or 2's content: the bar's middle row is 2 rows from the edge
    assert got[0, 3, 5] == pytest.approx(2 * PIXEL_MM[0], rel=1e-6)
    assert (got[2] == 0).all()
    assert plane_distance_sq(mask[0], PIXEL_MM)[3, 5] == pytest.approx((2 * PIXEL_MM[0]) ** 2, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lung_closing_matches_the_scipy_disk_closing(seed):
    mask = blobs(seed=seed)
    got = _closing_per_slice(mask, 5.0, PIXEL_MM)
    assert np.array_equal(got, reference_closing(mask, 5.0, PIXEL_MM))
    assert (got & mask).sum() == mask.sum() and got.sum() > mask.sum()  # it closes gaps


@pytest.mark.parametrize("rings", [1, 2])
def test_grow_in_plane_is_the_cross_dilation(rings):
    mask = blobs(fill=0.02)
    assert np.array_equal(grow_in_plane(mask, rings), ndi.binary_dilation(mask, EDGE_RING, iterations=rings))


def test_mediastinum_distance_within_is_exact_up_to_its_limit():
    labels = np.zeros((4, 40, 60), np.uint8)
    labels[:, 5:35, 4:22] = 1
    labels[:, 8:32, 34:56] = 2
    labels[2, 12:20, 20:36] = 1  # a slice where the lungs nearly touch
    full = mediastinum_distance_mm(labels, PIXEL_MM)
    within = mediastinum_distance_mm(labels, PIXEL_MM, within_mm=6.0)
    near = full <= 6.0
    assert near.any() and (labels[near] > 0).any()
    np.testing.assert_allclose(within[near], full[near], rtol=1e-6)
    assert (within[~near] > 6.0).all()
    # the reference: scipy on the whole slice
    mediastinum = np.zeros(labels.shape[1:], bool)
    mediastinum[8:32, 22:34] = True  # rows with both lungs, between them
    want = ndi.distance_transform_edt(~mediastinum, sampling=PIXEL_MM)
    lung = labels[0] > 0
    np.testing.assert_allclose(full[0][lung], want[lung], rtol=1e-5, atol=1e-4)


def test_peripheral_map_matches_the_scipy_definition():
    labels = np.zeros((3, 50, 70), np.uint8)
    yy, xx = np.mgrid[:50, :70]
    labels[:, ((yy - 25) / 20) ** 2 + ((xx - 18) / 14) ** 2 <= 1] = 1
    labels[:, ((yy - 25) / 18) ** 2 + ((xx - 50) / 15) ** 2 <= 1] = 2
    labels[1, :, :35][labels[1, :, :35] == 1] = 0  # one slice with the left lung only
    labels[2, 10:40, 0:20] = 1  # one slice whose right lung runs off the image's edge
    got = peripheral_map(labels, PIXEL_MM)
    want = np.zeros_like(got)
    for z in range(labels.shape[0]):
        for lab in (1, 2):
            lung = labels[z] == lab
            if lung.any():
                dist = ndi.distance_transform_edt(np.pad(lung, 1), sampling=PIXEL_MM)[1:-1, 1:-1]
                want[z] |= lung & (dist <= PERIPHERAL_FRACTION * dist[lung].max())
    assert np.count_nonzero(got != want) <= 0.002 * np.count_nonzero(labels)  # float32 ties only
    assert got[labels == 0].sum() == 0 and got.sum() > 0


def test_label_components_is_uint16_and_falls_back_for_many_components():
    from covidct.quant.lungs import label_components

    few = np.zeros((2, 8, 8), bool)
    few[0, 1:3, 1:3] = few[1, 5, 5] = True
    labels, n = label_components(few)
    assert labels.dtype == np.uint16 and n == 2 and np.array_equal(labels > 0, few)
    many = np.zeros((1, 600, 600), bool)
    many[0, ::2, ::2] = True  # 90,000 separate pixels: more than uint16 holds
    labels, n = label_components(many)
    assert n == 90_000 and labels.max() == 90_000 and labels.dtype.itemsize >= 4


@pytest.mark.parametrize(("factor", "shape"), [(2, (19, 34, 30)), (3, (17, 31, 29))])
def test_block_mean_matches_the_reshaped_mean_across_chunks(factor, shape):
    """Integer HU (exact in float32): the chunked row-then-column sums equal a plain reshaped mean,
    over several `BLOCK_MEAN_CHUNK` steps and with edge rows/columns that do not fill a block."""
    from covidct.quant.analysis import BLOCK_MEAN_CHUNK, block_mean_array

    values = np.random.default_rng(0).integers(-1024, 400, shape).astype(np.float32)
    z, y, x = shape
    yb, xb = y // factor, x // factor
    want = values[:, : yb * factor, : xb * factor].reshape(z, yb, factor, xb, factor).mean(axis=(2, 4))
    got = block_mean_array(values, factor)
    assert z > 2 * BLOCK_MEAN_CHUNK and got.shape == (z, yb, xb) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))
