"""Patient-level bootstrap against plain loops, Wilson, DeLong against a published example."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from covidct.errors import EvaluationError
from covidct.evaluation import intervals as I

LEVEL = 0.95


def test_bootstrap_enumerates_all_resamples_of_three_patients() -> None:
    """3 patients -> 27 equally likely ordered resamples; the percentile interval is computable by hand."""
    y = np.array([0, 1, 1])
    pred = np.array([0, 1, 0])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    draws = np.array(list(itertools.product(range(3), repeat=3)))
    res = I.bootstrap_metrics(y, pred, probs, indices=draws, class_names=("a", "b"))
    acc = [np.mean(y[d] == pred[d]) for d in draws]
    assert res["accuracy"].estimate == pytest.approx(2 / 3)
    assert (res["accuracy"].low, res["accuracy"].high) == pytest.approx(
        tuple(np.percentile(acc, [2.5, 97.5]))
    )
    # AUC of class b: undefined when the resample has one class (all 0 or only patients 1/2)
    one_class = [len(set(y[d])) == 1 for d in draws]
    assert res["auc:b"].n_undefined == sum(one_class) == 1 + 8
    aucs = [skm.roc_auc_score(y[d], probs[d, 1]) for d, oc in zip(draws, one_class, strict=True) if not oc]
    assert (res["auc:b"].low, res["auc:b"].high) == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])))
    assert "9 of 27 resamples" in res["auc:b"].reason


def test_slice_level_bootstrap_resamples_patients_like_a_plain_loop() -> None:
    """Fixed seed: vectorised replicates equal a loop rebuilding each resample's slice rows (sklearn)."""
    rng = np.random.default_rng(3)
    n_pat, per = 12, 4
    y_pat = np.array([0, 1, 2] * 4)
    groups = np.repeat(np.arange(n_pat), per)
    y = y_pat[groups]
    probs = rng.dirichlet(np.ones(3), size=groups.size)
    probs[np.arange(y.size), y] += 0.3
    probs /= probs.sum(1, keepdims=True)
    pred = probs.argmax(1)
    n_boot = 200
    res = I.bootstrap_metrics(
        y, pred, probs, groups=groups, n_boot=n_boot, random_state=7, class_names=("N", "P", "C")
    )
    draws = I.bootstrap_indices(n_pat, n_boot, 7)
    acc, kappa, auc, sens = [], [], [], []
    for d in draws:
        rows = np.concatenate([np.flatnonzero(groups == g) for g in d])
        acc.append(skm.accuracy_score(y[rows], pred[rows]))
        kappa.append(skm.cohen_kappa_score(y[rows], pred[rows]))
        sens.append(
            skm.recall_score(y[rows], pred[rows], labels=[0, 1, 2], average=None, zero_division=np.nan)[2]
        )
        yb = y[rows] == 2
        auc.append(skm.roc_auc_score(yb, probs[rows, 2]) if 0 < yb.sum() < yb.size else np.nan)
    for key, ref in (("accuracy", acc), ("kappa", kappa), ("auc:C", auc), ("sensitivity:C", sens)):
        ref = np.asarray(ref, float)
        finite = ref[np.isfinite(ref)]
        assert res[key].n_undefined == ref.size - finite.size
        assert (res[key].low, res[key].high) == pytest.approx(tuple(np.percentile(finite, [2.5, 97.5])))
    assert res["accuracy"].estimate == pytest.approx(skm.accuracy_score(y, pred))
    assert res["accuracy"].n == n_pat


def test_bca_is_reasonable_and_differs_from_percentile() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    score = np.clip(0.5 * y + rng.normal(0.25, 0.3, 80), 0, 1)
    probs = np.column_stack([1 - score, score])
    pct = I.bootstrap_metrics(y, probs.argmax(1), probs, n_boot=2000, method="percentile")["auc:1"]
    bca = I.bootstrap_metrics(y, probs.argmax(1), probs, n_boot=2000, method="bca")["auc:1"]
    assert bca.low < bca.estimate < bca.high
    assert abs(bca.low - pct.low) < 0.05 and (bca.low, bca.high) != (pct.low, pct.high)
    with pytest.raises(EvaluationError, match="percentile"):
        I.bootstrap_metrics(y, y, probs, method="basic")


def test_wilson_known_values() -> None:
    """8/10 at 95%: 0.4902-0.9433 (Wilson 1927; Newcombe 1998 Table I method 3 gives the same)."""
    iv = I.wilson_interval(8, 10)
    assert (iv.low, iv.high) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    assert math.isnan(I.wilson_interval(0, 0).estimate)


# Hanley & McNeil (1982), Radiology 143:29-36, Table 1: 5-point ratings of 109 CT images.
HM_NORMAL = (33, 6, 6, 11, 2)
HM_ABNORMAL = (3, 2, 2, 11, 33)
HM_PUBLISHED_AUC = 0.893


def _hanley_mcneil():
    ratings = np.arange(1, 6)
    y = np.r_[np.zeros(sum(HM_NORMAL)), np.ones(sum(HM_ABNORMAL))].astype(int)
    return y, np.r_[np.repeat(ratings, HM_NORMAL), np.repeat(ratings, HM_ABNORMAL)].astype(float)


def _delong_slow(y, scores):
    """O(m n) structural components of DeLong, DeLong & Clarke-Pearson (1988), eqs. (2)-(5)."""
    y = y.astype(bool)
    comps10, comps01, aucs = [], [], []
    for s in scores:
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        comps10.append(psi.mean(axis=1))
        comps01.append(psi.mean(axis=0))
    s10, s01 = np.atleast_2d(np.cov(np.array(comps10))), np.atleast_2d(np.cov(np.array(comps01)))
    return np.array(aucs), s10 / y.sum() + s01 / (~y).sum()


def test_delong_matches_published_example_and_slow_reference() -> None:
    y, s = _hanley_mcneil()
    aucs, cov = I.delong_covariance(y, s)
    assert aucs[0] == pytest.approx(HM_PUBLISHED_AUC, abs=5e-4)  # published 0.893
    ref_auc, ref_cov = _delong_slow(y, s[None])
    assert aucs[0] == pytest.approx(ref_auc[0])
    assert cov[0, 0] == pytest.approx(ref_cov[0, 0])
    # Hanley-McNeil's approximate SE for these data is 0.032; DeLong's exact SE is 0.0307.
    assert math.sqrt(cov[0, 0]) == pytest.approx(0.0307, abs=5e-4)
    iv = I.delong_interval(y, s)
    assert iv.low < iv.estimate < iv.high <= 1


def test_paired_delong_matches_slow_reference() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 70)
    a = y + rng.normal(0, 1.0, 70)
    b = a + rng.normal(0, 0.8, 70)
    aucs, cov = I.delong_covariance(y, np.vstack([a, b]))
    ref_auc, ref_cov = _delong_slow(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, ref_auc)
    np.testing.assert_allclose(cov, ref_cov)
    test = I.delong_test(y, a, b)
    var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    z = (ref_auc[0] - ref_auc[1]) / math.sqrt(var)
    assert test.z == pytest.approx(z)
    from scipy import stats

    assert test.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))
    with pytest.raises(EvaluationError, match="at least 2 positive"):
        I.delong_covariance([1, 0, 0], [0.2, 0.1, 0.3])


def test_rank_and_pair_auc_paths_agree() -> None:
    """The two AUC paths (cluster-pair matrix, weighted ranks) give identical replicates, with ties."""
    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(30), 3)
    y = np.repeat(rng.integers(0, 3, 30), 3)
    probs = rng.dirichlet(np.ones(3), size=90).round(1)  # rounding makes ties
    probs /= probs.sum(1, keepdims=True)
    idx = I.bootstrap_indices(30, 50, 1)
    for grp in (None, groups):
        pair = I.cluster_data(y, probs.argmax(1), probs, groups=grp)
        rank = I.cluster_data(y, probs.argmax(1), probs, groups=grp, pair_limit=0)
        assert isinstance(rank.auc_parts[0], I.RankAUC) and isinstance(pair.auc_parts[0], I.PairAUC)
        n_clusters = pair.n_clusters
        rp, rr = I.replicate_metrics(
            [pair, rank], I.bootstrap_indices(n_clusters, 50, 1) if grp is None else idx
        )
        for key in ("auc:0", "auc:1", "auc:2", "auc_macro"):
            np.testing.assert_allclose(rp[key], rr[key], err_msg=key)
    ones = np.ones((1, 90))
    assert I.metrics_from_weights(rank, ones[:, :30])["auc:1"][0] == pytest.approx(
        skm.roc_auc_score(y == 1, probs[:, 1])
    )
