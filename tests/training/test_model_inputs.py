"""Each model declares its recipe, data unit and input shape; configs follow it and refuse mismatches."""

from __future__ import annotations

import pytest

from covidct.errors import ConfigError
from covidct.models import list_models, model_defaults
from covidct.preprocessing import get_recipe, list_recipes
from covidct.training.config import UNITS, TrainConfig


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_a_registered_recipe_and_unit(name):
    defaults = model_defaults(name)
    assert defaults.recipe in list_recipes() and defaults.recipe == defaults.recipes[0]
    assert defaults.data_unit in UNITS and set(defaults.data_units) <= set(UNITS)
    assert defaults.unit in ("slice", "scan") and all(v > 0 for v in defaults.input_shape)


@pytest.mark.parametrize("name", list_models())
def test_config_derives_recipe_and_unit_from_the_model(name):
    defaults = model_defaults(name)
    overrides = {"denoiser_checkpoint": "stage1.ckpt"} if defaults.data_unit == "residual" else {}
    config = TrainConfig.from_dict({"model": name, **overrides})
    assert config.recipe.name == defaults.recipe and config.data.unit == defaults.data_unit
    if defaults.fixed_input:
        assert get_recipe(config.recipe.name).input_shape == defaults.input_shape


@pytest.mark.parametrize("raw, message", [
    ({"model": "covidnet-3d", "recipe": {"name": "covidnet-ct2"}}, "fed by the 'covidnet-3d' recipe"),
    ({"model": "covidnet-3d", "data": {"unit": "denoise"}}, "trains on data.unit 'scan'"),
    ({"model": "covidnet-ct2-s", "data": {"unit": "scan"}}, "trains on data.unit 'slice'"),
    ({"model": "covidctnet-classifier", "recipe": {"overrides": {"size": 128}},
      "denoiser_checkpoint": "x.ckpt"}, r"built for input \(1, 50, 240, 240\)"),
])
def test_config_refuses_what_the_model_cannot_take(raw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(raw)


def test_matching_overrides_are_accepted():
    config = TrainConfig.from_dict({
        "model": {"name": "covidctnet-classifier", "overrides": {"input_shape": [1, 50, 128, 128]}},
        "recipe": {"overrides": {"size": 128}}, "denoiser_checkpoint": "x.ckpt"})
    assert config.build_recipe().input_shape == (1, 50, 128, 128)
