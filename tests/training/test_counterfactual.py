"""Counterfactual slices: ground glass added only inside the lungs, found lesions removed, the
other class's target in training, and clear refusals where no counterfactual can be made."""

from __future__ import annotations

import numpy as np
import pytest
from tests.quant.test_slice_lesions import lung_grey, phantom_hu

from covidct.classes import CLASSES_3, COVID, NON_COVID, NORMAL
from covidct.errors import ConfigError
from covidct.preprocessing.recipes import get_recipe
from covidct.quant.bands import GGO_HU
from covidct.quant.slice_lesions import analyse_slice
from covidct.training.counterfactual import add_ground_glass, counterfactual_slice, remove_lesions
from covidct.training.datasets import SliceDataset, SliceRef


def lesion_fraction(grey: np.ndarray) -> float:
    return analyse_slice(grey).figures().lesion_fraction


def test_ground_glass_is_added_inside_the_lungs_only() -> None:
    """Every draw brightens part of the lung into the ground-glass band (-700..-300 HU, read with the
    healthy slice's own anchors) and changes nothing outside the lung hull."""
    healthy = lung_grey(phantom_hu()).astype(np.float32)
    maps = analyse_slice(healthy)

    def ggo_fraction(grey: np.ndarray) -> float:
        hu = maps.anchors.to_hu(grey)
        return float(((hu >= GGO_HU[0]) & (hu < GGO_HU[1]) & maps.hull).sum() / maps.hull.sum())

    for seed in range(4):
        added = add_ground_glass(healthy, np.random.default_rng(seed))
        assert added.shape == healthy.shape and added.dtype == np.float32
        changed = np.abs(added - healthy) > 0.5
        assert changed.any() and not (changed & ~maps.hull).any()
        assert (added >= healthy - 0.5).all()  # only brighter: nothing made darker
        assert ggo_fraction(added) > ggo_fraction(healthy) + 0.02
    again = add_ground_glass(healthy, np.random.default_rng(0))
    np.testing.assert_array_equal(again, add_ground_glass(healthy, np.random.default_rng(0)))


def test_found_lesions_are_removed_and_the_rest_is_kept() -> None:
    sick = lung_grey(phantom_hu(lesion_hu=-550.0)).astype(np.float32)
    maps = analyse_slice(sick)
    cleaned = remove_lesions(sick, np.random.default_rng(0))
    assert cleaned is not None
    assert lesion_fraction(sick) > 0.04 and lesion_fraction(cleaned) < 0.01
    assert np.abs(cleaned - sick)[~maps.hull].max() < 0.5  # outside the lungs untouched
    assert remove_lesions(lung_grey(phantom_hu()), np.random.default_rng(0)) is None  # nothing to remove


def test_no_counterfactual_without_lungs() -> None:
    assert counterfactual_slice(np.zeros((64, 64)), False, np.random.default_rng(0)) is None
    assert counterfactual_slice(np.full((64, 64), 200.0), True, np.random.default_rng(0)) is None


class _Record:
    def __init__(self, label: str) -> None:
        self.label, self.case_id, self.path = label, label, label


def _dataset(counterfactual: float, classes: tuple[str, ...] = (COVID, NON_COVID)) -> SliceDataset:
    images = {COVID: lung_grey(phantom_hu(lesion_hu=-550.0)), NORMAL: lung_grey(phantom_hu())}
    refs = [SliceRef(_Record(label)) for label in (COVID, NORMAL) * 3]
    recipe = get_recipe("covidnet-ct2", size=64)
    return SliceDataset(refs, recipe, classes, loader=lambda ref: (images[ref.record.label], False),
                        counterfactual=counterfactual)


def test_dataset_swaps_the_target_with_the_image() -> None:
    always, never = _dataset(1.0), _dataset(0.0)
    for i in range(len(always)):
        original = never[i]
        swapped = always[i]
        assert swapped["target"] == 1 - original["target"]
        assert not np.allclose(swapped["input"].numpy(), original["input"].numpy())
    half = _dataset(0.5)
    draws = []
    for epoch in range(6):
        half.set_epoch(epoch)
        draws.append([half[i]["target"] != never[i]["target"] for i in range(len(half))])
    assert 0 < np.mean(draws) < 1 and len({tuple(d) for d in draws}) > 1  # redrawn every epoch


def test_counterfactual_needs_the_binary_task() -> None:
    with pytest.raises(ConfigError, match="binary"):
        _dataset(0.5, CLASSES_3)
    from covidct.training import TrainConfig

    with pytest.raises(ConfigError, match="binary"):
        TrainConfig.from_dict({"counterfactual": 0.5})  # default task is the 3-class one
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        TrainConfig.from_dict({"counterfactual": 1.5, "data": {"task": "binary"}})
    assert TrainConfig.from_dict({"counterfactual": 0.5, "data": {"task": "binary"}}).counterfactual == 0.5
