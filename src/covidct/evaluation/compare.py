"""Comparing two models (or a reader and a model) on the same cases: McNemar, paired bootstrap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# scipy.stats (~0.4 s to import) is imported in the functions that use it: importing covidct (the CLI,
# the service, the Predictor) does not pay for it
from covidct.errors import EvaluationError
from covidct.evaluation.intervals import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    cluster_data,
    iter_bootstrap_indices,
    metrics_from_weights,
    percentile_bounds,
    replicate_metrics,
)

EXACT_DISCORDANT_LIMIT = 25  # below this many discordant pairs McNemar uses the exact binomial test
DEFAULT_COMPARED = ("accuracy", "sensitivity", "specificity", "auc")


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired correct/incorrect outcomes."""

    b: int  # a correct, b wrong
    c: int  # a wrong, b correct
    statistic: float
    p_value: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_test(correct_a, correct_b, *, exact: bool | None = None) -> McNemarResult:
    """McNemar's test of equal error rates.

    ``exact=None`` picks the exact two-sided binomial test when the discordant count b + c is below
    ``EXACT_DISCORDANT_LIMIT`` and the chi-square test with continuity correction otherwise.
    """
    from scipy import stats

    a, bb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != bb.shape:
        raise EvaluationError(f"McNemar needs paired outcomes; got {a.size} and {bb.size} cases.")
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    use_exact = (b + c) < EXACT_DISCORDANT_LIMIT if exact is None else exact
    if b + c == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact" if use_exact else "chi2-cc")
    if use_exact:
        p = min(1.0, 2.0 * stats.binom.cdf(min(b, c), b + c, 0.5))
        return McNemarResult(b, c, float(min(b, c)), float(p), "exact")
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return McNemarResult(b, c, float(stat), float(stats.chi2.sf(stat, 1)), "chi2-cc")


@dataclass(frozen=True)
class Difference:
    """Paired bootstrap of metric(a) - metric(b)."""

    metric: str
    estimate: float
    low: float
    high: float
    p_value: float
    level: float
    n: int
    n_boot: int
    n_undefined: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def bootstrap_p_value(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'no difference': 2 x min(P(d <= 0), P(d >= 0)) in [1/B, 1].

    The floor 1/B (B = defined replicates) says "smaller than the resolution of B resamples", never 0.
    """
    finite = diffs[np.isfinite(diffs)]
    if finite.size == 0:
        return float("nan")
    p = 2.0 * min(np.mean(finite <= 0), np.mean(finite >= 0))
    return float(min(1.0, max(p, 1.0 / finite.size)))


def _expand(metrics: Sequence[str], class_names: Sequence[str]) -> list[str]:
    keys = []
    for m in metrics:
        if m in ("sensitivity", "specificity", "ppv", "npv", "f1", "auc"):
            keys += [f"{m}:{c}" for c in class_names]
        else:
            keys.append(m)
    return keys


def paired_bootstrap(
    y_true,
    pred_a,
    score_a,
    pred_b,
    score_b,
    *,
    groups=None,
    class_names: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_COMPARED,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    random_state: int | None = 0,
) -> dict[str, Difference]:
    """Differences a - b of each metric with percentile intervals and p-values.

    Both models are scored on the same resamples (paired).
    """
    da = cluster_data(y_true, pred_a, score_a, groups=groups, class_names=class_names)
    db = cluster_data(y_true, pred_b, score_b, groups=groups, class_names=class_names)
    idx = iter_bootstrap_indices(da.n_clusters, n_boot, random_state)
    ra, rb = replicate_metrics([da, db], idx)
    ones = np.ones((1, da.n_clusters))
    pa, pb = metrics_from_weights(da, ones), metrics_from_weights(db, ones)
    out = {}
    for key in _expand(metrics, da.class_names):
        if key not in pa:
            raise EvaluationError(
                f"Unknown metric {key!r} for comparison; use {', '.join(DEFAULT_COMPARED)}."
            )
        diffs = ra[key] - rb[key]
        lo, hi = percentile_bounds(diffs, level)
        out[key] = Difference(
            key,
            float(pa[key][0] - pb[key][0]),
            lo,
            hi,
            bootstrap_p_value(diffs),
            level,
            da.n_clusters,
            int(diffs.size),
            int(np.sum(~np.isfinite(diffs))),
        )
    return out
