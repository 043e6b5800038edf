"""Lung box crop and the seeded scanner augmentation (issue 11 robustness experiments)."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.preprocessing import get_recipe
from covidct.preprocessing.augment import ScannerAugment
from covidct.preprocessing.lung_intensity import enclosed_dark_mask
from covidct.preprocessing.transforms import BodyBox, LungBox, LungWindow


def test_lung_box_holds_the_lungs_and_is_inside_the_body_box(small_phantom) -> None:
    z = 6
    grey = LungWindow()(small_phantom.volume.array[z])
    lungs = small_phantom.lung_mask[z] > 0
    ys, xs = np.nonzero(lungs)
    x0, y0, x1, y1 = LungBox()(grey)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    bx0, by0, bx1, by1 = BodyBox()(grey)
    assert bx0 <= x0 and by0 <= y0 and x1 <= bx1 and y1 <= by1
    assert (x1 - x0) * (y1 - y0) < 0.9 * (bx1 - bx0) * (by1 - by0)  # tighter than the body box
    overlap = (enclosed_dark_mask(grey) & lungs).sum() / lungs.sum()
    assert overlap > 0.5  # the dark mask misses the (bright) lesions; the margin keeps them in the box


def test_lung_box_falls_back_to_the_body_box_without_lungs() -> None:
    img = np.zeros((64, 64), np.float32)
    img[10:54, 12:50] = 200.0  # a body with no enclosed air
    assert LungBox()(img) == BodyBox()(img)


def test_scanner_augment_is_seeded_and_stays_in_range() -> None:
    img = np.random.default_rng(0).uniform(0, 255, (48, 40)).astype(np.float32)
    a = ScannerAugment(np.random.default_rng(5), prob=1.0)(img)
    b = ScannerAugment(np.random.default_rng(5), prob=1.0)(img)
    c = ScannerAugment(np.random.default_rng(6), prob=1.0)(img)
    assert a.shape == img.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 255.0
    np.testing.assert_array_equal(ScannerAugment(np.random.default_rng(5), prob=0.0)(img), img)


def test_scanner_steps_do_what_they_say() -> None:
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (64, 1))
    np.testing.assert_allclose(ScannerAugment.gamma(ramp, 1.0), ramp, atol=1e-3)
    assert ScannerAugment.gamma(ramp, 2.0)[0, 32] < ramp[0, 32]  # gamma > 1 darkens mid-greys
    assert ScannerAugment.contrast(ramp, 0.5).std() == pytest.approx(0.5 * ramp.std(), rel=1e-4)
    assert np.abs(ScannerAugment.jpeg(ramp, 95) - ramp).mean() < 2.0
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.float32)
    low = ScannerAugment.resolution(checker, 0.5)
    assert low.shape == checker.shape and low.std() < 0.5 * checker.std()  # fine detail lost


def test_recipe_lung_box_and_scanner_augment(small_phantom) -> None:
    img = small_phantom.volume.array[6]
    plain = get_recipe("covidnet-ct2", size=32, box_mode="lung")
    scanner = get_recipe("covidnet-ct2", size=32, box_mode="lung", scanner_augment=True)
    np.testing.assert_array_equal(
        plain.prepare_image(img, is_hu=True), scanner.prepare_image(img, is_hu=True)
    )
    a = scanner.prepare_image(img, is_hu=True, rng=np.random.default_rng(1))
    b = plain.prepare_image(img, is_hu=True, rng=np.random.default_rng(1))
    assert a.shape == (3, 32, 32) and not np.array_equal(a, b)
    body = get_recipe("covidnet-ct2", size=32).prepare_image(img, is_hu=True)
    assert not np.array_equal(body, plain.prepare_image(img, is_hu=True))  # lung crop differs from body crop
    assert get_recipe("covidnet-ct2", box_mode="lung").to_dict()["box_mode"] == "lung"
