"""CT severity score bands and the RSNA-pattern rule on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.quant.regions import LungRegions, zone_map
from covidct.quant.severity import score_scan, severity_score, suggest_pattern

EDGES = [(0.0, 0), (0.00499, 0), (0.005, 1), (0.04999, 1), (0.05, 2), (0.25, 2), (0.25001, 3), (0.49999, 3),
         (0.5, 4), (0.75, 4), (0.75001, 5), (1.0, 5)]
"""Every edge of the docstring's table, on both sides: 5 % and 50 % open the next band, 25 % and 75 %
still belong to theirs (Pan et al.: 2 = 5-25 %, 3 = 26-49 %, 4 = 50-75 %, 5 > 75 %)."""


@pytest.mark.parametrize(("fraction", "score"), EDGES)
def test_severity_band_edges(fraction, score):
    assert severity_score(fraction) == score


def test_docstring_table_is_the_code():
    """The table in `covidct.quant.severity`'s docstring lists the same scores at the same edges."""
    import re

    from covidct.quant import severity

    rows = re.findall(r"^\s+(\d)\s{4,}(.+?)\s*$", severity.__doc__, re.M)
    table = {int(score): text for score, text in rows}
    assert set(table) == {0, 1, 2, 3, 4, 5}
    assert table[2] == "5 % <= f <= 25 %" and table[3] == "25 % < f < 50 %"
    assert table[4] == "50 % <= f <= 75 %" and table[5] == "f > 75 %"
    for score, text in table.items():
        for bound in re.findall(r"([\d.]+) %", text):
            edge = float(bound) / 100
            number = rf"(?<![\d.]){re.escape(bound)} %"
            inclusive_below = re.search(number + " <= f", text) is not None
            inclusive_above = re.search("f <= " + number, text) is not None
            if inclusive_below or inclusive_above:
                assert severity_score(edge) == score, (score, text)
            else:
                assert severity_score(edge) != score, (score, text)


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
    zones = zone_map(labels, inferior_first=False)
    assert (zones[0:3, :, :4] == 1).all() and (zones[6:9, :, :4] == 3).all()
    assert (zones[3:5, :, 4:] == 1).all() and (zones[7:9, :, 4:] == 3).all()
    ggo = np.zeros(labels.shape, bool)
    ggo[7:9, :, 4:] = True  # the whole left lower zone
    regions = LungRegions(labels, zones, np.zeros_like(ggo), (1.0, 10.0, 100.0))  # 1 ml voxels
    report = score_scan(regions, ggo, np.zeros_like(ggo))
    assert report.zones["left lower"].score == 5 and report.zones["left lower"].involvement == 1.0
    assert report.severity_total == 5
    assert report.distribution[0] == "unilateral (left)" and "lower-zone predominant" in report.distribution
