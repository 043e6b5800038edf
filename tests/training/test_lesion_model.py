"""The lesion-feature logistic regression: same fit as scikit-learn, NaN rows,
JSON round trip, and a regularisation choice made by leave-one-group-out inside the training groups."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from covidct.errors import ConfigError
from covidct.evaluation.metrics import binary_auc
from covidct.training.lesion_model import (
    C_GRID,
    WEIGHTINGS,
    LesionModel,
    fit_logistic,
    sample_weights,
    select_by_groups,
)

NAMES = ["disease", "source_cue", "noise"]


def cohort(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three groups; ``disease`` separates the classes everywhere, ``source_cue`` only in group g0."""
    rng = np.random.default_rng(seed)
    xs, ys, gs = [], [], []
    for g in range(3):
        y = (np.arange(n) % 2).astype(float)
        disease = y + rng.normal(0, 0.8, n)
        cue = (y if g == 0 else -y) * 3.0 + rng.normal(0, 0.3, n)
        xs.append(np.stack([disease, cue, rng.normal(0, 1, n)], 1))
        ys.append(y)
        gs += [f"g{g}"] * n
    return np.concatenate(xs), np.concatenate(ys), np.array(gs)


def test_fit_matches_scikit_learn() -> None:
    x, y, _ = cohort()
    x = (x - x.mean(0)) / x.std(0)
    for c in (0.1, 1.0):
        ours = fit_logistic(x, y, c)
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=1000).fit(x, y)
        np.testing.assert_allclose(ours[:-1], ref.coef_[0], atol=1e-4)
        assert ours[-1] == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_group_class_weights_give_every_cell_the_same_total() -> None:
    y = np.array([1, 1, 1, 0, 1, 0.0])
    w = sample_weights(y, ["a", "a", "a", "a", "b", "b"], "group-class")
    assert w.sum() == pytest.approx(len(y))
    cells = {("a", 1): w[:3].sum(), ("a", 0): w[3], ("b", 1): w[4], ("b", 0): w[5]}
    assert max(cells.values()) == pytest.approx(min(cells.values()))
    with pytest.raises(ConfigError, match="weighting"):
        sample_weights(y, ["a"] * 6, "per-source")


def test_nan_rows_get_training_medians_and_json_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x, y, _ = cohort()
    model = LesionModel.fit(x, y, NAMES, c=1.0)
    row = x[:1].copy()
    row[0, 2] = np.nan
    filled = row.copy()
    filled[0, 2] = np.median(x[:, 2])
    assert model.decision(row) == pytest.approx(model.decision(filled))
    again = LesionModel.from_json(model.to_json(tmp_path / "m.json"))
    np.testing.assert_allclose(again.predict_proba(x), model.predict_proba(x))
    assert again.describe().splitlines()[0].startswith("disease")  # the largest weight first


def test_one_class_training_set_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="both classes"):
        LesionModel.fit(np.zeros((4, 3)), np.ones(4), NAMES)


def test_leave_one_group_out_prefers_the_setting_that_transfers() -> None:
    """A weak penalty lets the model lean on ``source_cue`` (perfect in g0, inverted elsewhere); the
    held-out-group AUCs see that and the selection records every candidate."""
    x, y, groups = cohort()
    model = select_by_groups(x, y, groups, NAMES)
    assert len(model.selection) == len(C_GRID) * len(WEIGHTINGS)
    assert max(model.selection.values()) == model.selection[f"C={model.c:g},{model.weighting}"]
    test_x, test_y, _ = cohort(seed=7)
    test_x[:, 1] = -test_x[:, 1]  # a new source where the cue flips again
    assert binary_auc(test_y, model.decision(test_x)) > 0.7


def test_with_one_two_class_group_the_default_setting_is_used() -> None:
    x, y, groups = cohort()
    keep = (groups == "g0") | (y == 1)
    model = select_by_groups(x[keep], y[keep], groups[keep], NAMES)
    assert (model.c, model.weighting, model.selection) == (1.0, "none", {})
