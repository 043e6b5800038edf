"""COVID-Net CT-2 preprocessing on the whole stack gives the same numbers as slice by slice."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.io.volume import Volume
from covidct.preprocessing import BodyBox, LungWindow, get_recipe, union_box
from covidct.preprocessing.transforms import crop_resize_slice


def slice_by_slice(recipe, volume: Volume) -> np.ndarray:
    """The per-slice path as it was before issue 13: one body box and one `prepare_image` per slice."""
    grey = recipe.to_uint8(np.asarray(volume.array, dtype=np.float32), is_hu=volume.is_hu)
    boxes = [recipe.body_box(recipe.focus(s)) for s in grey]  # LungFocus (off by default) comes first
    if recipe.box_mode == "volume":
        boxes = [union_box(boxes)] * len(boxes)
    return np.stack([recipe.prepare_image(s, is_hu=False, box=b) for s, b in zip(grey, boxes, strict=True)])


def prepared_array(prepared) -> np.ndarray:
    """The array of `prepare_volume`'s result (an array, or an object with ``.array``)."""
    return np.asarray(getattr(prepared, "array", prepared))


def test_threaded_body_boxes_equal_per_slice(small_phantom) -> None:
    grey = LungWindow()(small_phantom.volume.array)
    per_slice = [BodyBox()(s) for s in grey]
    assert BodyBox().boxes(grey, workers=2) == per_slice
    assert BodyBox().boxes(grey, workers=1) == per_slice


def test_crop_resize_slice_equals_prepare_image(small_phantom) -> None:
    recipe = get_recipe("covidnet-ct2", size=64)
    grey = LungWindow()(small_phantom.volume.array)
    h, w = grey.shape[1:]
    # distinct, non-square boxes (a swapped x/y or an off-by-one crop changes the numbers)
    boxes = [(3 + i, 10, w - 5, h - 2 - i) for i in range(len(grey))]
    expected = np.stack(
        [recipe.prepare_image(s, is_hu=False, box=b) for s, b in zip(grey, boxes, strict=True)]
    )
    got = np.stack([crop_resize_slice(s, b, 64) for s, b in zip(grey, boxes, strict=True)])
    assert got.shape == (len(grey), 64, 64) and got.dtype == np.float32
    assert all(np.array_equal(got, expected[:, c]) for c in range(3))


@pytest.mark.parametrize(
    "box_mode, focus",
    [
        ("slice", {}),
        ("volume", {}),
        ("none", {}),
        ("slice", {"standardise": True, "mask_outside_lungs": True}),
    ],
)
def test_prepare_volume_equals_slice_by_slice(small_phantom, box_mode: str, focus: dict) -> None:
    recipe = get_recipe("covidnet-ct2", size=64, box_mode=box_mode, **focus)
    got = prepared_array(recipe.prepare_volume(small_phantom.volume))
    assert np.array_equal(got, slice_by_slice(recipe, small_phantom.volume))


@pytest.mark.realdata
def test_prepare_volume_equals_slice_by_slice_on_real_study(shared_data) -> None:
    from covidct.io import read_volume

    volume = read_volume(shared_data / "covid-ct-md" / "COVID-19" / "P001")
    recipe = get_recipe("covidnet-ct2", size=256)
    got = prepared_array(recipe.prepare_volume(volume))
    assert got.shape == (volume.num_slices, 3, 256, 256)
    assert np.array_equal(got, slice_by_slice(recipe, volume))


@pytest.mark.parametrize("box_mode", ["slice", "volume"])
def test_prepare_volume_of_chosen_slices_equals_those_rows(small_phantom, box_mode: str) -> None:
    """Preparing only some slices (the lung slices the model will score) gives exactly their rows of
    the whole preparation, with the geometry naming which volume slice each row is."""
    recipe = get_recipe("covidnet-ct2", size=64, box_mode=box_mode)
    whole = recipe.prepare_volume(small_phantom.volume)
    chosen = [9, 2, 5, 6]  # unsorted on purpose: rows come back in volume order
    part = recipe.prepare_volume(small_phantom.volume, slices=chosen)
    assert part.geometry.slices == (2, 5, 6, 9)
    assert part.geometry.volume_shape == whole.geometry.volume_shape
    assert np.array_equal(prepared_array(part), prepared_array(whole)[[2, 5, 6, 9]])
    assert part.geometry.boxes == tuple(whole.geometry.boxes[s] for s in (2, 5, 6, 9))


def test_prepare_volume_rejects_slices_outside_the_volume(small_phantom) -> None:
    from covidct.errors import ShapeError

    recipe = get_recipe("covidnet-ct2", size=64)
    for bad in ([], [-1], [small_phantom.volume.num_slices]):
        with pytest.raises(ShapeError, match="slices must be"):
            recipe.prepare_volume(small_phantom.volume, slices=bad)


def test_prepared_channels_share_one_grey_image(small_phantom) -> None:
    """The 3 channels of a prepared CT-2 slice are one grey image (a read-only view, not 3 copies)."""
    got = get_recipe("covidnet-ct2", size=32).prepare_volume(small_phantom.volume).array
    assert got.shape == (small_phantom.volume.num_slices, 3, 32, 32) and not got.flags.writeable
    assert got.strides[1] == 0  # one image seen 3 times
    assert got[:, 0].any()
