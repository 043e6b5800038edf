"""`LungFocus`: per-image standardisation inside the lungs and masking outside them (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.preprocessing import get_recipe
from covidct.preprocessing.lung_intensity import PARENCHYMA_HU, LungFocus, find_lungs
from covidct.preprocessing.transforms import LungWindow

Z = 6  # a mid-lung slice of the small phantom


def _lungs_and_lesion(phantom) -> tuple[np.ndarray, np.ndarray]:
    return phantom.lung_mask[Z] > 0, phantom.lesion_mask[Z]


def test_hull_covers_the_lungs_with_their_lesions_and_nothing_outside(small_phantom) -> None:
    grey = LungWindow()(small_phantom.volume.array[Z])
    lungs, lesion = _lungs_and_lesion(small_phantom)
    assert lesion.any()
    found = find_lungs(grey)
    region = LungFocus.region(found)
    assert (region & lungs).sum() / lungs.sum() > 0.9
    assert (region & lesion).sum() / lesion.sum() > 0.8  # subpleural: the convex hull keeps them
    assert (region & ~lungs).sum() / region.sum() < 0.15


def test_standardisation_undoes_another_window_and_gamma(small_phantom) -> None:
    """The same slice exported with two windows (and a gamma) reads about the same after focus."""
    hu = small_phantom.volume.array[Z]
    lung_window = LungWindow()(hu)
    other = LungWindow(-450.0, 1100.0)(hu)
    other = 255.0 * (other / 255.0) ** 0.8
    focus = LungFocus(mask=True)
    hull = find_lungs(lung_window).lung
    a, b = focus(lung_window)[hull], focus(other)[hull]
    assert np.abs(a - b).mean() < 8.0  # a gamma is not linear: the two anchors undo most of it
    assert np.abs(lung_window[hull] - other[hull]).mean() > 20.0  # without it they differ a lot
    # the parenchyma lands on the grey of -850 HU under the lung window
    lungs, lesion = _lungs_and_lesion(small_phantom)
    expected = float(LungWindow()(np.float32(PARENCHYMA_HU)))
    assert np.median(focus(other)[lungs & ~lesion]) == pytest.approx(expected, abs=8.0)


def test_mask_removes_text_outside_the_body_and_keeps_the_lungs(small_phantom) -> None:
    grey = LungWindow()(small_phantom.volume.array[Z])
    marked = grey.copy()
    marked[2:8, 2:30] = 255.0  # a burnt-in annotation in the corner
    out = LungFocus(standardise=False, mask=True)(marked)
    assert out[2:8, 2:30].max() == 0.0
    lungs, _ = _lungs_and_lesion(small_phantom)
    np.testing.assert_array_equal(out[lungs & (out > 0)], marked[lungs & (out > 0)])


def test_a_crop_to_the_lungs_still_finds_them(small_phantom) -> None:
    grey = LungWindow()(small_phantom.volume.array[Z])
    lungs, _ = _lungs_and_lesion(small_phantom)
    ys, xs = np.nonzero(lungs)
    crop = grey[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]  # the body is cut by the border
    found = find_lungs(crop).lung
    uncropped = find_lungs(grey).lung[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    assert uncropped.sum() > 500
    assert (found & uncropped).sum() / uncropped.sum() > 0.9  # as much as in the whole image
    assert (found & ~uncropped).sum() / found.sum() < 0.1


def test_no_lungs_leaves_the_image_as_it_is() -> None:
    body = np.zeros((64, 64), np.float32)
    body[8:56, 8:56] = 200.0  # soft tissue, no air inside
    np.testing.assert_array_equal(LungFocus()(body), body)
    np.testing.assert_array_equal(LungFocus()(np.zeros((32, 32), np.float32)), np.zeros((32, 32)))


def test_recipe_focus_is_off_by_default_and_crops_to_the_lungs_when_masking(small_phantom) -> None:
    img = small_phantom.volume.array[Z]
    plain = get_recipe("covidnet-ct2", size=32)
    masked = get_recipe("covidnet-ct2", size=32, mask_outside_lungs=True, standardise=True)
    assert plain.to_dict()["mask_outside_lungs"] is False and plain.to_dict()["standardise"] is False
    a, b = plain.prepare_image(img, is_hu=True), masked.prepare_image(img, is_hu=True)
    assert a.shape == b.shape == (3, 32, 32) and not np.array_equal(a, b)
    # the masked image's box is the lungs' box, so the lungs fill more of the input than the body does
    assert (b[0] > 0).mean() > (a[0] < 110 / 255).mean()
    augmented = masked.prepare_image(img, is_hu=True, rng=np.random.default_rng(0))
    assert augmented.shape == (3, 32, 32) and np.isfinite(augmented).all()


def test_focus_window_shows_normal_parenchyma_black_and_survives_a_checkpoint(small_phantom) -> None:
    from covidct.errors import ConfigError
    from covidct.preprocessing.recipes import recipe_from_dict

    img = small_phantom.volume.array[Z]
    narrow = get_recipe(
        "covidnet-ct2", size=96, box_mode="none", standardise=True, focus_window=(-500.0, 500.0)
    )
    wide = get_recipe("covidnet-ct2", size=96, box_mode="none", standardise=True)
    lungs, lesion = _lungs_and_lesion(small_phantom)
    parenchyma = lungs & ~lesion
    assert np.median(narrow.prepare_image(img, is_hu=True)[0][parenchyma]) == 0.0  # -850 HU < -750 HU
    assert np.median(wide.prepare_image(img, is_hu=True)[0][parenchyma]) > 0.2
    assert recipe_from_dict(narrow.to_dict()).prepare_image(img, is_hu=True).tolist() == (
        narrow.prepare_image(img, is_hu=True).tolist()
    )
    with pytest.raises(ConfigError, match="focus_window"):
        get_recipe("covidnet-ct2", focus_window=(-500.0, 500.0))  # without standardise
