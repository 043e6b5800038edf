"""Every metric equals scikit-learn's on random data; undefined values are NaN, never 0."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import calibration as skcal
from sklearn import metrics as skm

from covidct.evaluation import metrics as M

SEEDS = (0, 1, 2)
N = 300
K = 3


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    logits = rng.normal(size=(N, K))
    logits[np.arange(N), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs.argmax(1), probs


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_based_metrics_match_sklearn(seed: int) -> None:
    y, pred, _ = random_case(seed)
    np.testing.assert_array_equal(M.confusion_matrix(y, pred), skm.confusion_matrix(y, pred))
    assert M.accuracy_score(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    np.testing.assert_allclose(M.sensitivity_score(y, pred), skm.recall_score(y, pred, average=None))
    np.testing.assert_allclose(M.ppv_score(y, pred), skm.precision_score(y, pred, average=None))
    np.testing.assert_allclose(M.f1_score(y, pred), skm.f1_score(y, pred, average=None))
    assert M.f1_score(y, pred, average="macro") == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert M.cohen_kappa_score(y, pred) == pytest.approx(skm.cohen_kappa_score(y, pred))
    spec = [skm.recall_score(y != k, pred != k) for k in range(K)]  # specificity = recall of the negatives
    npv = [skm.precision_score(y != k, pred != k) for k in range(K)]
    np.testing.assert_allclose(M.specificity_score(y, pred), spec)
    np.testing.assert_allclose(M.npv_score(y, pred), npv)


@pytest.mark.parametrize("seed", SEEDS)
def test_ranking_and_calibration_match_sklearn(seed: int) -> None:
    y, _, probs = random_case(seed)
    np.testing.assert_allclose(
        M.roc_auc_ovr(y, probs), skm.roc_auc_score(y, probs, multi_class="ovr", average=None)
    )
    assert M.roc_auc_ovr(y, probs, average="macro") == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    yb, score = y == 2, probs[:, 2]
    assert M.brier_score(yb, score) == pytest.approx(skm.brier_score_loss(yb, score))
    fpr, tpr, thr = M.roc_curve(yb, score)
    sk_fpr, sk_tpr, _ = skm.roc_curve(yb, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    prec, rec, _ = M.precision_recall_curve(yb, score)
    sk_prec, sk_rec, _ = skm.precision_recall_curve(yb, score, drop_intermediate=False)
    np.testing.assert_allclose(prec, sk_prec)
    np.testing.assert_allclose(rec, sk_rec)
    frac, mean_p, _ = M.calibration_curve(yb, score, n_bins=10)
    sk_frac, sk_mean = skcal.calibration_curve(yb, score, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(frac, sk_frac)
    np.testing.assert_allclose(mean_p, sk_mean)
    onehot = np.eye(K)[y]
    assert M.multiclass_brier_score(y, probs) == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, 1)))


def test_ece_hand_computed() -> None:
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.95, 0.95])  # bins: [0.05, 0.15] -> not same bin (0 and 1), [0.95, 0.95]
    # bin0: frac 0, mean .05 -> .05; bin1: frac 1, mean .15 -> .85; bin9: frac 1, mean .95 -> .05 (x2)
    expected = (1 * 0.05 + 1 * 0.85 + 2 * 0.05) / 4
    assert M.expected_calibration_error(y, p, n_bins=10) == pytest.approx(expected)


def test_one_class_auc_is_nan_with_reason() -> None:
    with pytest.warns(M.UndefinedMetricWarning, match="only positive"):
        assert np.isnan(M.binary_auc(np.ones(5), np.linspace(0, 1, 5)))
    y = np.zeros(6, dtype=int)
    probs = np.full((6, 3), 1 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.UndefinedMetricWarning)
        aucs = M.roc_auc_ovr(y, probs)
        assert np.isnan(aucs).all()
        assert np.isnan(M.roc_auc_ovr(y, probs, average="macro"))
    reasons = M.undefined_reasons(y, y, ("Normal", "Pneumonia", "COVID-19"))
    assert any("AUC undefined: test set has one class" in r for r in reasons)


def test_zero_denominators_are_nan_not_zero() -> None:
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 0, 0])  # class 1 never predicted, class 2 absent
    with pytest.warns(M.UndefinedMetricWarning):
        ppv = M.ppv_score(y, pred, labels=[0, 1, 2])
    assert np.isnan(ppv[1]) and np.isnan(ppv[2]) and ppv[0] == 0.5
    with pytest.warns(M.UndefinedMetricWarning):
        assert np.isnan(M.cohen_kappa_score([1, 1, 1], [1, 1, 1]))


def test_bad_shapes_raise() -> None:
    from covidct.errors import EvaluationError

    with pytest.raises(EvaluationError, match="one prediction per case"):
        M.confusion_matrix([0, 1], [0])
    with pytest.raises(EvaluationError, match="NaN"):
        M.binary_auc([0, 1], [0.1, np.nan])
