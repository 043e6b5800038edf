"""Recipes: documented shapes and ranges, registry, dict round trip, 8-bit inputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from covidct.errors import ConfigError, UnknownNameError
from covidct.io.volume import Volume
from covidct.preprocessing import get_recipe, list_recipes, recipe_from_dict
from covidct.preprocessing.transforms import LungWindow

SMALL = {
    "covidnet-ct2": {"size": 64},
    "ai-corona": {"size": 64},
    "covidnet-3d": {"depth": 16, "resize_to": 80, "crop": 64},
    "covidctnet": {"size": 48, "depth": 20},
    "covidctnet-released": {"size": 32, "depth": 20},
}


def test_registry():
    assert list_recipes() == ["ai-corona", "covidctnet", "covidctnet-released", "covidnet-3d", "covidnet-ct2"]
    with pytest.raises(UnknownNameError, match="covidnet-ct2"):
        get_recipe("covidnet-ct")
    with pytest.raises(ConfigError, match="valid parameters"):
        get_recipe("covidnet-ct2", sise=64)
    with pytest.raises(ConfigError):
        get_recipe("covidnet-ct2", size=0)
    with pytest.raises(ConfigError):
        get_recipe("covidnet-ct2", box_mode="lungs")


def test_paper_defaults():
    assert get_recipe("covidnet-ct2").input_shape == (3, 512, 512)
    assert get_recipe("ai-corona").input_shape == (3, 512, 512)
    assert get_recipe("covidnet-3d").input_shape == (1, 64, 384, 384)
    assert get_recipe("covidctnet").input_shape == (1, 50, 240, 240)
    r = get_recipe("covidctnet")
    assert (r.hu_min, r.hu_max, r.spacing) == (-1000, 400, (1.0, 1.0, 1.0))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_dict_round_trip(name):
    recipe = get_recipe(name, **SMALL[name])
    d = json.loads(json.dumps(recipe.to_dict()))
    assert d["name"] == name and d["unit"] == recipe.unit
    assert recipe_from_dict(d) == recipe
    assert recipe_from_dict({"name": name}) == get_recipe(name)
    assert dataclasses.is_dataclass(recipe)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.name2 = 1  # type: ignore[attr-defined]


def test_from_dict_errors():
    with pytest.raises(ConfigError):
        recipe_from_dict({"size": 3})
    with pytest.raises(ConfigError):
        recipe_from_dict({"name": "covidctnet", "unit": "slice"})


def test_covidnet_ct2(small_phantom):
    r = get_recipe("covidnet-ct2", **SMALL["covidnet-ct2"])
    x = r.prepare_volume(small_phantom.volume).array
    assert x.shape == (12, 3, 64, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(x[:, 0], x[:, 2])  # grey in 3 channels
    one = r.prepare_image(small_phantom.volume.array[6], is_hu=True)
    assert one.shape == (3, 64, 64) and np.allclose(one, x[6], atol=1e-5)
    aug1 = r.prepare_image(small_phantom.volume.array[6], is_hu=True, rng=np.random.default_rng(1))
    aug2 = r.prepare_image(small_phantom.volume.array[6], is_hu=True, rng=np.random.default_rng(1))
    assert np.array_equal(aug1, aug2) and aug1.shape == (3, 64, 64)
    whole = get_recipe("covidnet-ct2", size=64, box_mode="volume").prepare_volume(small_phantom.volume).array
    assert whole.shape == (12, 3, 64, 64)


def test_covidnet_ct2_8bit_equals_hu_path(small_phantom):
    r = get_recipe("covidnet-ct2", size=64)
    hu = small_phantom.volume
    grey = Volume(array=LungWindow()(hu.array), spacing=hu.spacing, is_hu=False)
    assert np.allclose(r.prepare_volume(grey).array, r.prepare_volume(hu).array, atol=1e-5)


def test_ai_corona(small_phantom):
    r = get_recipe("ai-corona", **SMALL["ai-corona"])
    x = r.prepare_volume(small_phantom.volume).array
    assert x.shape == (6, 3, 64, 64) and x.dtype == np.float32
    assert -0.485 / 0.229 - 1e-4 <= x.min() < -1.8  # air near 0 after scaling to [0, 255]
    assert x.max() <= (1 - 0.406) / 0.225 + 1e-4
    assert r.prepare_image(small_phantom.volume.array[0]).shape == (3, 64, 64)


def test_covidnet_3d(small_phantom):
    r = get_recipe("covidnet-3d", **SMALL["covidnet-3d"])
    x = r.prepare_volume(small_phantom.volume).array
    assert x.shape == (1, 16, 64, 64) == r.input_shape
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.min() < 0.05  # air (-1000 HU) is close to 0


def test_covidctnet(small_phantom):
    r = get_recipe("covidctnet", **SMALL["covidctnet"])
    x = r.prepare_volume(small_phantom.volume).array
    assert x.shape == (1, 20, 48, 48) == r.input_shape
    assert 0.0 <= x.min() and x.max() <= 1.0
    slices = r.prepare_slices(small_phantom.volume).array
    assert slices.shape == (60, 1, 48, 48)  # 12 slices x 5 mm -> 60 slices at 1 mm


def test_8bit_scan_recipes(small_phantom):
    grey = Volume(array=LungWindow()(small_phantom.volume.array), spacing=(5.0, 1.6, 1.6), is_hu=False)
    for name in ("covidnet-3d", "covidctnet", "covidctnet-released"):
        x = get_recipe(name, **SMALL[name]).prepare_volume(grey).array
        assert 0.0 <= x.min() and x.max() <= 1.0


def test_scan_recipe_rejects_prepare_image():
    with pytest.raises(ConfigError):
        get_recipe("covidnet-3d").prepare_image(np.zeros((8, 8)), is_hu=True)
