"""Transforms: documented numbers, shapes and ranges."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.errors import ConfigError, ShapeError
from covidct.preprocessing import (
    BodyBox,
    CenterCrop,
    CovidNetCTAugment,
    CropToBox,
    HUClip,
    ImageNetNormalize,
    LungWindow,
    MiddleSlices,
    ResampleSpacing,
    Resize2D,
    ResizeDepth,
    ScaleTo255,
    ToChannels,
    TopPercentileClip,
    union_box,
)


def test_lung_window_numbers():
    out = LungWindow()(np.array([-2000.0, -1350.0, -600.0, 150.0, 1000.0]))
    assert np.allclose(out, [0, 0, 127.5, 255, 255])
    assert LungWindow(round_to_uint8=True)(np.array([150.0])).dtype == np.uint8
    with pytest.raises(ConfigError):
        LungWindow(width=0)


def test_hu_clip():
    assert np.allclose(HUClip(-1000, 400)(np.array([-2000.0, -300.0, 900.0])), [0, 0.5, 1])
    assert np.allclose(HUClip(-1024, 1024, scale01=False)(np.array([-3000.0, 5.0])), [-1024, 5])


def test_body_box_contains_body_and_excludes_air(small_phantom):
    img = small_phantom.volume.array[6]
    x0, y0, x1, y1 = BodyBox()(img)
    ys, xs = np.nonzero(img > -500)  # body voxels
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    # tight: no more than a few pixels of air around the body
    assert xs.min() - x0 <= 8 and x1 - xs.max() <= 9 and ys.min() - y0 <= 8 and y1 - ys.max() <= 9
    assert (y1 - y0) < img.shape[0] - 10  # air above and below the body is excluded
    # works on the 8-bit windowed slice too
    assert abs(np.subtract(BodyBox()(LungWindow()(img)), (x0, y0, x1, y1))).max() <= 3


def test_body_box_blank_image_is_full():
    assert BodyBox()(np.zeros((20, 30))) == (0, 0, 30, 20)
    with pytest.raises(ShapeError):
        BodyBox()(np.zeros((2, 20, 30)))


def test_crop_resize_channels():
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    crop = CropToBox()(img, (2, 3, 7, 9))
    assert crop.shape == (6, 5) and crop[0, 0] == 32
    assert Resize2D(16)(crop).shape == (16, 16)
    assert Resize2D((8, 4))(np.zeros((3, 2, 10, 10))).shape == (3, 2, 8, 4)
    assert ToChannels(3)(crop).shape == (3, 6, 5)
    assert ToChannels(3, stacked=True)(np.zeros((4, 5, 6))).shape == (4, 3, 5, 6)
    assert union_box([(1, 2, 5, 6), (0, 3, 4, 9)]) == (0, 2, 5, 9)


def test_middle_slices():
    stack = np.arange(10)[:, None, None] * np.ones((1, 2, 2))
    mid = MiddleSlices(0.5)(stack)
    assert mid[:, 0, 0].tolist() == [2, 3, 4, 5, 6]
    assert MiddleSlices(0.5)(stack[:1]).shape[0] == 1


def test_top_percentile_clip_and_scale():
    img = np.arange(1000, dtype=np.float32)
    clipped = TopPercentileClip(0.5)(img)
    assert clipped.max() == pytest.approx(np.percentile(img, 99.5))
    assert (clipped == clipped.max()).sum() == 5  # the top 0.5% of 1000 values
    scaled = ScaleTo255()(clipped)
    assert scaled.min() == 0 and scaled.max() == pytest.approx(255)


def test_imagenet_normalize():
    out = ImageNetNormalize()(np.full((3, 2, 2), 255.0))
    assert np.allclose(out[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]))
    with pytest.raises(ShapeError):
        ImageNetNormalize()(np.zeros((2, 4, 4)))


def test_resample_resize_depth_center_crop():
    arr = np.random.default_rng(0).normal(size=(10, 20, 30)).astype(np.float32)
    out, spacing = ResampleSpacing((1, 1, 1))(arr, (2.5, 0.5, 0.5))
    assert out.shape == (25, 10, 15) and np.allclose(spacing, (1, 1, 1))
    assert ResizeDepth(7)(arr).shape == (7, 20, 30)
    assert CenterCrop(16)(arr).shape == (10, 16, 16)
    assert CenterCrop(24)(arr).shape == (10, 24, 24)  # pads when smaller
    const = np.full((4, 6, 6), 3.0, dtype=np.float32)
    assert np.allclose(ResizeDepth(9)(const), 3.0)


def _aug(seed, img, box, size=64):
    return CovidNetCTAugment(np.random.default_rng(seed), size=size)(img, box)


def test_augmentation_deterministic_and_varied(small_phantom):
    img = LungWindow()(small_phantom.volume.array[6])
    box = BodyBox()(img)
    a, b = _aug(3, img, box), _aug(3, img, box)
    assert a.shape == (3, 64, 64) and a.dtype == np.float32
    assert np.array_equal(a, b)
    outs = [_aug(s, img, box) for s in range(6)]
    assert len({o.tobytes() for o in outs}) == 6
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outs)


def test_augmentation_steps_cover_everything():
    """With prob 1 every step runs; the result is still a valid 3-channel image."""
    img = np.zeros((50, 60), dtype=np.float32)
    img[10:40, 15:45] = 200
    aug = CovidNetCTAugment(np.random.default_rng(0), size=32, prob=1.0)
    out = aug(img, (15, 10, 45, 40))
    assert out.shape == (3, 32, 32) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ShapeError):
        aug(np.zeros((2, 3, 4)), (0, 0, 4, 3))


def _body_slice(size: int = 512) -> np.ndarray:
    """A 512 px HU slice: an elliptic body (lungs inside) above a 6 px table, off-centre."""
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), -1000.0, np.float32)
    body = ((xx - 270) / 190.0) ** 2 + ((yy - 240) / 130.0) ** 2 <= 1
    img[body] = 40.0
    for cx in (200, 340):
        img[((xx - cx) / 60.0) ** 2 + ((yy - 230) / 80.0) ** 2 <= 1] = -850.0
    img[392:398, 40:480] = 200.0  # the table, 22 px below the body
    return img


def test_body_box_measured_coarse_matches_full_resolution() -> None:
    """The default (measured on a 2x coarser grid) lands within 2 px of the full-resolution box, in
    the slice's own pixels; the table is cut off both ways."""
    img = _body_slice()
    full = BodyBox(scale=1)(img)
    coarse = BodyBox()(img)
    assert np.abs(np.subtract(coarse, full)).max() <= 2
    x0, y0, x1, y1 = coarse
    ys, xs = np.nonzero(img[:380] > -500)  # the body, without the table
    assert abs(x0 - xs.min()) <= 4 and abs(x1 - 1 - xs.max()) <= 4
    assert abs(y0 - ys.min()) <= 4 and abs(y1 - 1 - ys.max()) <= 4 and y1 < 392
    with pytest.raises(ConfigError):
        BodyBox(scale=0)
