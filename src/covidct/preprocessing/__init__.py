"""Preprocessing: small pure transforms and each paper's recipe built from them.

>>> from covidct.preprocessing import get_recipe
>>> get_recipe("covidnet-ct2", size=128).input_shape
(3, 128, 128)
"""

from covidct.preprocessing.augment import CovidNetCTAugment
from covidct.preprocessing.geometry import Geometry, Prepared
from covidct.preprocessing.montage import display_slices, montage
from covidct.preprocessing.recipes import (
    AiCoronaRecipe,
    CovidCTNetRecipe,
    CovidCTNetReleasedRecipe,
    CovidNet3DRecipe,
    CovidNetCT2Recipe,
    Recipe,
    get_recipe,
    list_recipes,
    recipe_from_dict,
)
from covidct.preprocessing.transforms import (
    BodyBox,
    CenterCrop,
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

__all__ = [
    "AiCoronaRecipe", "BodyBox", "CenterCrop", "CovidCTNetRecipe", "CovidCTNetReleasedRecipe",
    "CovidNet3DRecipe", "CovidNetCT2Recipe", "CovidNetCTAugment", "CropToBox", "Geometry", "HUClip",
    "ImageNetNormalize", "LungWindow", "MiddleSlices", "Prepared", "Recipe",
    "ResampleSpacing", "Resize2D", "ResizeDepth", "ScaleTo255", "ToChannels", "TopPercentileClip",
    "display_slices", "get_recipe", "list_recipes", "montage", "recipe_from_dict", "union_box",
]
