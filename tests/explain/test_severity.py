"""CT severity score bands and the RSNA-pattern rule on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.explain.severity import score_scan, severity_score, suggest_pattern, zone_map

BANDS = [(0.0, 0), (0.004, 0), (0.01, 1), (0.049, 1), (0.05, 2), (0.25, 3), (0.49, 3), (0.5, 4), (0.74, 4),
         (0.75, 5), (1.0, 5)]


@pytest.mark.parametrize(("fraction", "score"), BANDS)
def test_severity_bands(fraction, score):
    assert severity_score(fraction) == score


def _ml(right: float, left: float) -> dict[str, float]:
    return {"right": right, "left": left, "total": right + left}


def test_pattern_rules():
    inv = {"total": 0.05, "right": 0.05, "left": 0.05}
    typical = suggest_pattern(inv, _ml(50, 50), 80, 20, ["bilateral", "peripheral predominant"])
    assert typical.category == "typical" and "not a diagnosis" in typical.label
    atypical = suggest_pattern(inv, _ml(95, 0), 10, 85, ["unilateral (right)"])
    assert atypical.category == "atypical"
    central = suggest_pattern(inv, _ml(50, 50), 80, 20, ["bilateral", "central predominant"])
    assert central.category == "indeterminate"
    negative = suggest_pattern({"total": 0.005, "right": 0.0, "left": 0.01}, _ml(0, 5), 5, 0, [])
    assert negative.category == "negative" and "1%" in negative.rule


def test_zone_map_thirds_per_lung_and_score_scan_per_zone():
    labels = np.zeros((9, 4, 8), np.uint8)
    labels[:, :, :4] = 1  # right lung (image left), slices 0..8
    labels[3:, :, 4:] = 2  # left lung starts lower: its thirds are its own
    zones = zone_map(labels)
    assert (zones[0:3, :, :4] == 1).all() and (zones[6:9, :, :4] == 3).all()
    assert (zones[3:5, :, 4:] == 1).all() and (zones[7:9, :, 4:] == 3).all()
    ggo = np.zeros(labels.shape, bool)
    ggo[7:9, :, 4:] = True  # the whole left lower zone
    report = score_scan(labels, ggo, np.zeros_like(ggo), np.zeros_like(ggo), 1.0)
    assert report.zones["left lower"].score == 5 and report.zones["left lower"].involvement == 1.0
    assert report.severity_total == 5
    assert report.distribution[0] == "unilateral (left)" and "lower-zone predominant" in report.distribution
