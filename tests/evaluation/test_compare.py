"""McNemar against known values; paired bootstrap; operating points."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from covidct.errors import EvaluationError
from covidct.evaluation import apply_threshold, choose_threshold, mcnemar_test, paired_bootstrap


def _pairs(b: int, c: int, both: int = 10):
    a = np.r_[np.ones(b), np.zeros(c), np.ones(both)].astype(bool)
    bb = np.r_[np.zeros(b), np.ones(c), np.ones(both)].astype(bool)
    return a, bb


def test_mcnemar_chi_square_known_value() -> None:
    """Wikipedia 'McNemar's test' example: b=121, c=59 -> chi2 = 21.35 without, 20.67 with correction."""
    res = mcnemar_test(*_pairs(121, 59))
    assert res.method == "chi2-cc"
    assert res.statistic == pytest.approx((abs(121 - 59) - 1) ** 2 / 180)
    assert res.statistic == pytest.approx(20.672, abs=1e-3)
    assert res.p_value == pytest.approx(stats.chi2.sf(20.672, 1), rel=1e-3)


def test_mcnemar_exact_small_counts() -> None:
    """b=1, c=6: two-sided exact p = 2 * (1 + 7) / 2**7 = 0.125."""
    res = mcnemar_test(*_pairs(1, 6))
    assert res.method == "exact"
    assert res.p_value == pytest.approx(0.125)
    assert mcnemar_test(*_pairs(0, 0)).p_value == 1.0


def test_paired_bootstrap_identical_models_and_a_better_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    good = np.clip(0.6 * y + rng.normal(0.2, 0.2, 100), 0, 1)
    bad = rng.random(100)
    pg, pb = np.column_stack([1 - good, good]), np.column_stack([1 - bad, bad])
    same = paired_bootstrap(y, pg.argmax(1), pg, pg.argmax(1), pg, n_boot=500)
    assert same["accuracy"].estimate == 0 and same["accuracy"].p_value == 1.0
    diff = paired_bootstrap(y, pg.argmax(1), pg, pb.argmax(1), pb, n_boot=500, class_names=("n", "p"))
    assert diff["auc:p"].estimate > 0.2 and diff["auc:p"].low > 0
    assert diff["auc:p"].p_value == pytest.approx(1 / 500)  # floor: never reported as 0
    assert set(diff) >= {"accuracy", "sensitivity:p", "specificity:p", "auc:p"}


def test_operating_points_chosen_on_tuning_data() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400).astype(bool)
    s = np.clip(0.4 * y + rng.normal(0.3, 0.2, 400), 0, 1)
    op = choose_threshold(y, s, rule="spec:0.95")
    assert op.specificity >= 0.95
    assert np.mean(s[~y] < op.threshold) == pytest.approx(op.specificity)
    assert np.mean(s[y] >= op.threshold) == pytest.approx(op.sensitivity)
    assert choose_threshold(y, s, rule="sens:0.95").sensitivity >= 0.95
    yd = choose_threshold(y, s, rule="youden")
    grid = np.unique(s)
    best = max(np.mean(s[y] >= t) + np.mean(s[~y] < t) - 1 for t in grid)
    assert yd.sensitivity + yd.specificity - 1 == pytest.approx(best)
    probs = np.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    assert apply_threshold(probs, 2, 0.25).tolist() == [2, 2, 2]
    assert apply_threshold(probs, 2, 0.7).tolist() == [0, 1, 0]  # ties -> first class
    with pytest.raises(EvaluationError, match="youden"):
        choose_threshold(y, s, rule="spec")
    with pytest.raises(EvaluationError, match="only negative"):
        choose_threshold(np.zeros(5), s[:5], rule="youden")
