"""Round trips through each recipe's geometry: mark the volume, prepare, map the model-space
difference back with ``recipe.to_volume`` and find the mark where it was put.

The planted bugs these catch: a wrong un-crop offset, a map pasted flipped, the COVID-Net CT-2
body-box crop skipped, a flip not undone, slices put back at the wrong z.
"""

from __future__ import annotations

import numpy as np
import pytest

from covidct.errors import ConfigError
from covidct.io.volume import Volume
from covidct.preprocessing import get_recipe
from covidct.synthetic import make_phantom

SHAPE = (24, 96, 96)
SPACING = (5.0, 2.0, 2.0)
LEFT_LUNG_LABEL = 2  # phantom labels: 1 right lung (image left), 2 left lung (image right)
MARK_HU = 300.0
LESION_HU = -100.0
# small configurations with a real crop / resize / slice selection in every recipe
RECIPES = {
    "covidnet-ct2": {"size": 64},
    "ai-corona": {"size": 64},
    "covidnet-3d": {"depth": 16, "resize_to": 64, "crop": 48},
    "covidctnet": {"size": 48, "depth": 20},
}
FLIP_SEED = 2  # np.random.default_rng(2).random() < 0.5: the scan recipes flip


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("Normal", shape=SHAPE, spacing=SPACING, seed=3)


def _with(volume: Volume, mask: np.ndarray, hu: float) -> Volume:
    arr = volume.array.copy()
    arr[mask] = hu
    return Volume(array=arr, spacing=volume.spacing, is_hu=True)


def _model_map(array: np.ndarray) -> np.ndarray:
    """Model input -> one map per model slice / depth: channel 0 of (S, C, H, W) or (1, D, H, W)."""
    return array[:, 0] if array.shape[1] == 3 else array[0]


def _difference_on_volume(name: str, base: Volume, marked: Volume, seed: int | None = None) -> np.ndarray:
    """Prepare both volumes, subtract in model space, map the difference back onto the volume grid."""
    recipe = get_recipe(name, **RECIPES[name])
    rng = (lambda: np.random.default_rng(seed)) if seed is not None else (lambda: None)
    a = recipe.prepare_volume(base, rng=rng())
    b = recipe.prepare_volume(marked, rng=rng())
    assert a.geometry == b.geometry
    diff = np.abs(_model_map(b.array) - _model_map(a.array))
    back = recipe.to_volume(diff, b.geometry)
    assert back.shape == base.shape and back.dtype == np.float32
    return back


def _tolerance(name: str) -> np.ndarray:
    """One model voxel, in volume voxels, per axis (z, y, x), plus one."""
    cfg = RECIPES[name]
    if name == "covidnet-3d":
        model = (cfg["depth"], cfg["resize_to"], cfg["resize_to"])
    elif name == "covidctnet":
        model = (cfg["depth"], cfg["size"], cfg["size"])
    else:
        model = (SHAPE[0], cfg["size"], cfg["size"])
    return np.ceil(np.asarray(SHAPE) / np.asarray(model)) + 1


def _mark_point(phantom) -> tuple[int, int, int]:
    """A voxel in the left lung (image right), upper half of the scan, inside ai-corona's middle half."""
    z = SHAPE[0] // 4 + 2
    ys, xs = np.nonzero(phantom.lung_mask[z] == LEFT_LUNG_LABEL)
    x = int(np.percentile(xs, 60))
    y = int(np.percentile(ys[xs == x], 20))  # anterior: far from where a skipped crop maps to itself
    assert x > SHAPE[2] // 2 + 10  # clearly off the midline, so a flip moves it far
    return z, y, x


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_one_marked_voxel_comes_back_in_place(phantom, name):
    z, y, x = _mark_point(phantom)
    mask = np.zeros(SHAPE, bool)
    mask[z, y, x] = True
    back = _difference_on_volume(name, phantom.volume, _with(phantom.volume, mask, MARK_HU))
    found = np.unravel_index(int(np.argmax(back)), SHAPE)
    assert np.all(np.abs(np.subtract(found, (z, y, x))) <= _tolerance(name)), (name, found, (z, y, x))


@pytest.mark.parametrize("name", ["ai-corona", "covidnet-3d", "covidctnet"])
def test_flipped_input_is_unflipped_on_the_way_back(phantom, name):
    assert np.random.default_rng(FLIP_SEED).random() < 0.5
    z, y, x = _mark_point(phantom)
    mask = np.zeros(SHAPE, bool)
    mask[z, y, x] = True
    recipe = get_recipe(name, **RECIPES[name])
    assert recipe.prepare_volume(phantom.volume, rng=np.random.default_rng(FLIP_SEED)).geometry.flipped
    back = _difference_on_volume(name, phantom.volume, _with(phantom.volume, mask, MARK_HU), seed=FLIP_SEED)
    found = np.unravel_index(int(np.argmax(back)), SHAPE)
    assert np.all(np.abs(np.subtract(found, (z, y, x))) <= _tolerance(name)), (name, found, (z, y, x))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_left_upper_lesion_stays_left_and_upper(phantom, name):
    """A left-only, upper-zone lesion maps back onto the left lung (image right), at its height."""
    zz, yy, xx = np.indices(SHAPE)
    z, y, x = _mark_point(phantom)
    lesion = ((zz - z) / 1.5) ** 2 + ((yy - y) / 8.0) ** 2 + ((xx - x) / 6.0) ** 2 <= 1.0
    lesion &= phantom.lung_mask == LEFT_LUNG_LABEL
    back = _difference_on_volume(name, phantom.volume, _with(phantom.volume, lesion, LESION_HU))
    hot = back >= 0.25 * back.max()
    assert hot[..., SHAPE[2] // 2 :].sum() >= 0.95 * hot.sum()  # left lung = image right half
    lung_z = np.nonzero(phantom.lung_mask.any(axis=(1, 2)))[0]
    upper_zone_end = lung_z.min() + (lung_z.max() - lung_z.min()) / 2
    assert hot[: int(np.ceil(upper_zone_end)) + 1].sum() >= 0.95 * hot.sum()
    centroid = np.array([c[hot].mean() for c in (zz, yy, xx)])
    truth = np.array([c[lesion].mean() for c in (zz, yy, xx)])
    assert np.all(np.abs(centroid - truth) <= _tolerance(name) + 1), (name, centroid, truth)


def test_covidnet_ct2_crops_each_slice_to_the_body(phantom):
    """The body box is cut out before resizing: the body fills more of the model input than of the
    slice, the recorded boxes lie inside the slice, and the input equals the resized crop."""
    recipe = get_recipe("covidnet-ct2", **RECIPES["covidnet-ct2"])
    whole = get_recipe("covidnet-ct2", box_mode="none", **RECIPES["covidnet-ct2"])
    prepared, uncropped = recipe.prepare_volume(phantom.volume), whole.prepare_volume(phantom.volume)
    z = SHAPE[0] // 2
    x0, y0, x1, y1 = prepared.geometry.boxes[z]
    assert 0 <= x0 < x1 <= SHAPE[2] and 0 < y0 < y1 < SHAPE[1]  # the phantom body is as wide as the image
    assert uncropped.geometry.boxes[z] == (0, 0, SHAPE[2], SHAPE[1])
    body = phantom.volume.array > -500.0
    assert body[z, y0:y1, x0:x1].sum() == body[z].sum()  # the box holds the whole body
    body_share = (prepared.array[z, 0] > 0.3).mean()
    uncropped_share = (uncropped.array[z, 0] > 0.3).mean()
    assert body_share > uncropped_share + 0.1, (body_share, uncropped_share)
    expected = recipe.prepare_image(phantom.volume.array[z, y0:y1, x0:x1], is_hu=True,
                                    box=(0, 0, x1 - x0, y1 - y0))
    assert np.allclose(prepared.array[z], expected, atol=1e-5)


def test_slice_rows_go_back_to_their_slices(phantom):
    recipe = get_recipe("covidnet-ct2", **RECIPES["covidnet-ct2"])
    prepared = recipe.prepare_volume(phantom.volume)
    heat = np.ones((2, 64, 64), np.float32)
    back = recipe.to_volume(heat, prepared.geometry, rows=[3, 11])
    assert sorted(np.nonzero(back.any(axis=(1, 2)))[0].tolist()) == [3, 11]
    x0, y0, x1, y1 = prepared.geometry.boxes[3]
    assert back[3, y0:y1, x0:x1].min() == 1.0 and back[3].sum() == (y1 - y0) * (x1 - x0)


def test_ai_corona_maps_back_to_the_middle_slices_only(phantom):
    recipe = get_recipe("ai-corona", **RECIPES["ai-corona"])
    prepared = recipe.prepare_volume(phantom.volume)
    back = recipe.to_volume(np.ones(prepared.array.shape[:1] + (64, 64), np.float32), prepared.geometry)
    assert np.nonzero(back.any(axis=(1, 2)))[0].tolist() == list(range(6, 18))


def test_augmented_geometry_is_not_mapped_back(phantom):
    recipe = get_recipe("covidnet-ct2", **RECIPES["covidnet-ct2"])
    prepared = recipe.prepare_volume(phantom.volume, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="augmentation"):
        recipe.to_volume(prepared.array[:, 0], prepared.geometry)


def test_prepared_take_keeps_rows_geometry_and_shared_channels() -> None:
    """`Prepared.take` returns the rows of the named volume slices with their boxes; a grey image
    broadcast to 3 channels stays one image (no copy per channel); unknown slices are refused."""
    from covidct.errors import ShapeError
    from covidct.preprocessing.geometry import Prepared, slicewise

    grey = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    array = np.broadcast_to(grey[:, None], (5, 3, 4, 4))
    boxes = [(i, 0, 8, 8) for i in range(5)]
    prepared = Prepared(array, slicewise((9, 8, 8), (5, 4, 4), [1, 3, 4, 6, 8], boxes))
    part = prepared.take([6, 3])
    assert part.geometry.slices == (6, 3) and part.geometry.boxes == ((3, 0, 8, 8), (1, 0, 8, 8))
    assert part.geometry.model_shape == (2, 4, 4) and part.geometry.volume_shape == (9, 8, 8)
    assert np.array_equal(part.array, array[[3, 1]]) and part.array.strides[1] == 0
    dense = Prepared(np.ascontiguousarray(array), prepared.geometry).take([8])
    assert np.array_equal(dense.array, array[[4]])
    with pytest.raises(ShapeError, match="not all prepared"):
        prepared.take([2])
