"""Zone and side through `Predictor.predict(Volume)` on volumes stored bottom-to-top and mirrored
left-right (issue 21, item 6): the report section and the explanation's lung summary must both say
'right', 'upper', because both now read the one analysis (before, severity said 'lower-zone
predominant' and quantify 'upper-zone predominant' on a phantom stored bottom-to-top)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import random_ct2s_checkpoint

from covidct.io.volume import Volume
from covidct.service.predictor import Predictor
from covidct.synthetic import add_lesion, make_phantom

SIZE = 32
LESION = ("right", "upper")
SIDE_RATIO = 5.0
"""The planted side holds at least this many times the other side's involvement."""


def _oriented(volume: Volume, how: str) -> Volume:
    """The same patient stored another way: the array flipped along z or x, the direction with it."""
    direction = np.asarray(volume.direction, float).reshape(3, 3).copy()
    axis = {"bottom-to-top": (0, 2), "mirrored": (2, 0)}.get(how)
    if axis is None:
        return volume
    array_axis, direction_column = axis
    direction[:, direction_column] *= -1
    return Volume(np.flip(volume.array, array_axis).copy(), volume.spacing, direction=direction)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor([random_ct2s_checkpoint(tmp_path_factory.mktemp("ckpt"), SIZE)], backend="torch")


@pytest.fixture(scope="module")
def planted() -> Volume:
    normal = make_phantom("Normal", shape=(40, 128, 128), spacing=(2.5, 1.4, 1.4), seed=0)
    return add_lesion(normal, side=LESION[0], zone=LESION[1], radius_mm=18).volume


@pytest.mark.parametrize("how", ["as stored", "bottom-to-top", "mirrored"])
def test_zone_and_side_follow_the_direction(predictor, planted, how):
    result = predictor.predict(_oriented(planted, how))
    section = result.quantitative
    zones = {name: zone["lesion_ml"] for name, zone in section["zones"].items()}
    assert max(zones, key=zones.get) == " ".join(LESION), zones
    words = section["distribution"]
    assert "unilateral (right)" in words and "upper-zone predominant" in words, words
    inv = section["involvement"]
    assert inv["right"] >= SIDE_RATIO * inv["left"], inv
    # the explanation's lung summary (result.distribution) reads the same analysis
    per_zone = {name: stats["fraction"] for name, stats in result.distribution["per_zone"].items()}
    assert max(per_zone, key=per_zone.get) == LESION[1], per_zone
    per_lung = result.distribution["per_lung"]
    assert per_lung["right"]["fraction"] >= SIDE_RATIO * per_lung["left"]["fraction"], per_lung
    assert "upper-zone predominant" in result.distribution["description"]
