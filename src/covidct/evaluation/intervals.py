"""Confidence intervals: patient-level bootstrap (percentile, BCa), Wilson, DeLong.

The bootstrap resamples **clusters** (patients), never rows: a slice-level table is resampled by
patient. All replicates are computed at once from a (B, n_clusters) multiplicity matrix ``W``
(how often each patient is drawn in each replicate):

- confusion matrices of every replicate: ``W @ C`` where ``C[g]`` counts (true, predicted) pairs of
  cluster ``g``;
- AUC of every replicate: weighted Mann-Whitney ``sum_pq W_p A_pq W_q / (npos(W) * nneg(W))`` where
  ``A_pq`` counts positive rows of cluster p scored above negative rows of cluster q (ties 1/2).

Replicate ``b`` draws clusters ``bootstrap_indices(n, B, random_state)[b]`` (generated in blocks).
Replicates where a metric is undefined (NaN) are counted in ``n_undefined`` and left out, never scored 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# scipy.stats (~0.4 s to import) is imported in the functions that use it: importing covidct (the CLI,
# the service, the Predictor) does not pay for it
from covidct.errors import EvaluationError
from covidct.evaluation.metrics import (
    accuracy_from_confusion,
    kappa_from_confusion,
    per_class_from_confusion,
    safe_divide,
)

DEFAULT_N_BOOT = 10_000
DEFAULT_LEVEL = 0.95
CHUNK_ELEMENTS = 4_000_000  # replicate rows x clusters handled per matrix product
INDEX_BLOCK_ELEMENTS = 8_000_000  # cluster draws generated at a time (64 MB of int64)
CI_METHODS = ("percentile", "bca")
AUC_PAIR_LIMIT = 2_000_000  # cluster pairs above which AUC switches from the pair matrix to ranks
PER_CLASS_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval and where it came from."""

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int
    n_boot: int = 0
    n_undefined: int = 0
    reason: str | None = None

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    def format(self, digits: int = 3) -> str:
        """``0.912 (0.871-0.945)`` or ``undefined (reason)``."""
        if math.isnan(self.estimate):
            return f"undefined ({self.reason})" if self.reason else "undefined"
        if math.isnan(self.low):
            return f"{self.estimate:.{digits}f} (CI undefined)"
        return f"{self.estimate:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


# ---- Wilson -----------------------------------------------------------------
def wilson_interval(successes: int, n: int, *, level: float = DEFAULT_LEVEL) -> Interval:
    """Wilson score interval of a proportion (NaN with a reason when n == 0)."""
    from scipy import stats

    if n == 0:
        nan = float("nan")
        return Interval(nan, nan, nan, level, "wilson", 0, reason="no cases in the denominator")
    z = stats.norm.ppf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level, "wilson", n)


# ---- per-cluster sufficient statistics --------------------------------------
@dataclass(frozen=True)
class ClusteredData:
    """Per-cluster statistics of one model's predictions, enough to score any reweighting of clusters."""

    class_names: tuple[str, ...]
    cm_counts: np.ndarray  # (G, K*K)
    brier_sums: np.ndarray  # (G,)
    unit_counts: np.ndarray  # (G,)
    auc_parts: tuple  # per class: PairAUC or RankAUC
    class_counts: tuple  # per class: (positive rows per cluster (G,), negative rows per cluster (G,))
    n_units: int

    @property
    def n_clusters(self) -> int:
        return int(self.unit_counts.size)

    @property
    def row_width(self) -> int:
        """Numbers held per replicate row while scoring (sizes the chunks)."""
        uses_ranks = any(isinstance(p, RankAUC) for p in self.auc_parts)
        return max(self.n_clusters, self.n_units if uses_ranks else 0, 1)


def _pairwise_clusters(s_pos, c_pos, s_neg, c_neg, n_pos_clusters: int, n_neg_clusters: int) -> np.ndarray:
    """A[p, q] = sum over positive rows of p, negative rows of q, of [s+ > s-] + [s+ == s-] / 2."""
    if n_pos_clusters == s_pos.size and n_neg_clusters == s_neg.size:  # one row per cluster
        a = np.zeros((n_pos_clusters, n_neg_clusters))
        a[c_pos] = (s_pos[:, None] > s_neg[None, :]) + 0.5 * (s_pos[:, None] == s_neg[None, :])
        out = np.empty_like(a)
        out[:, c_neg] = a
        return out
    out = np.zeros((n_pos_clusters, n_neg_clusters))
    order = np.lexsort((s_neg, c_neg))
    s_sorted, c_sorted = s_neg[order], c_neg[order]
    bounds = np.searchsorted(c_sorted, np.arange(n_neg_clusters + 1))
    for q in range(n_neg_clusters):
        sq = s_sorted[bounds[q] : bounds[q + 1]]
        less = np.searchsorted(sq, s_pos, "left")
        ties = np.searchsorted(sq, s_pos, "right") - less
        out[:, q] = np.bincount(c_pos, less + 0.5 * ties, n_pos_clusters)
    return out


@dataclass(frozen=True)
class PairAUC:
    """AUC by cluster pairs: numerator = sum_pq W_p A_pq W_q (small numbers of clusters)."""

    pos_clusters: np.ndarray
    neg_clusters: np.ndarray
    pairs: np.ndarray  # (P, N)

    def numerator(self, w: np.ndarray) -> np.ndarray:
        return np.sum((w[:, self.pos_clusters] @ self.pairs) * w[:, self.neg_clusters], axis=1)


@dataclass(frozen=True)
class RankAUC:
    """AUC by weighted ranks: rows sorted by score once, tied scores grouped (many clusters)."""

    cluster_sorted: np.ndarray  # (n,) cluster of each row in score order
    is_pos_sorted: np.ndarray  # (n,) bool
    tie_starts: np.ndarray  # (U,) first sorted index of each run of equal scores

    def numerator(self, w: np.ndarray) -> np.ndarray:
        wu = w[:, self.cluster_sorted]
        neg_run = np.add.reduceat(np.where(self.is_pos_sorted, 0.0, wu), self.tie_starts, axis=1)
        pos_run = np.add.reduceat(np.where(self.is_pos_sorted, wu, 0.0), self.tie_starts, axis=1)
        below = np.cumsum(neg_run, axis=1) - neg_run
        return np.sum(pos_run * (below + 0.5 * neg_run), axis=1)


def _auc_part(score: np.ndarray, pos: np.ndarray, g: np.ndarray, pair_limit: int) -> PairAUC | RankAUC:
    pos_clusters, c_pos = np.unique(g[pos], return_inverse=True)
    neg_clusters, c_neg = np.unique(g[~pos], return_inverse=True)
    if pos_clusters.size * neg_clusters.size <= pair_limit:
        a = _pairwise_clusters(score[pos], c_pos, score[~pos], c_neg, pos_clusters.size, neg_clusters.size)
        return PairAUC(pos_clusters, neg_clusters, a)
    order = np.argsort(score, kind="mergesort")
    s_sorted = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    return RankAUC(g[order], pos[order], starts)


def cluster_data(
    y_true,
    y_pred,
    y_score,
    *,
    groups=None,
    class_names: Sequence[str] | None = None,
    pair_limit: int = AUC_PAIR_LIMIT,
) -> ClusteredData:
    """Precompute per-cluster statistics; ``groups`` (patient ids) default to one cluster per row.

    AUC uses cluster pairs when (positive clusters x negative clusters) <= ``pair_limit``, else ranks.
    """
    yt, yp = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    scores = np.asarray(y_score, float)
    n, k = scores.shape
    if yt.shape != (n,) or yp.shape != (n,):
        raise EvaluationError(
            f"y_true {yt.shape}, y_pred {yp.shape} and y_score {scores.shape} disagree in length."
        )
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(k))
    _, g = np.unique(np.arange(n) if groups is None else np.asarray(groups), return_inverse=True)
    n_groups = int(g.max()) + 1 if n else 0
    onehot_pairs = np.zeros((n_groups, k * k))
    np.add.at(onehot_pairs, (g, yt * k + yp), 1.0)
    sq_err = np.sum((scores - np.eye(k)[yt]) ** 2, axis=1)
    parts = tuple(_auc_part(scores[:, c], yt == c, g, pair_limit) for c in range(k))
    counts = [
        (
            np.bincount(g[yt == c], minlength=n_groups).astype(float),
            np.bincount(g[yt != c], minlength=n_groups).astype(float),
        )
        for c in range(k)
    ]
    return ClusteredData(
        names,
        onehot_pairs,
        np.bincount(g, sq_err, n_groups),
        np.bincount(g, minlength=n_groups).astype(float),
        parts,
        tuple(counts),
        n,
    )


def metrics_from_weights(data: ClusteredData, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for every row of ``weights`` (B, G) of cluster multiplicities; values (B,)."""
    w = np.atleast_2d(np.asarray(weights, float))
    k = len(data.class_names)
    cms = (w @ data.cm_counts).reshape(-1, k, k)
    out: dict[str, np.ndarray] = {
        "accuracy": accuracy_from_confusion(cms),
        "kappa": kappa_from_confusion(cms),
    }
    per_class = per_class_from_confusion(cms)
    for name in PER_CLASS_METRICS:
        for c, cls in enumerate(data.class_names):
            out[f"{name}:{cls}"] = per_class[name][:, c]
    out["f1_macro"] = per_class["f1"].mean(axis=1)
    aucs = []
    for c, cls in enumerate(data.class_names):
        npos, nneg = data.class_counts[c]
        aucs.append(safe_divide(data.auc_parts[c].numerator(w), (w @ npos) * (w @ nneg)))
        out[f"auc:{cls}"] = aucs[-1]
    out["auc_macro"] = np.mean(aucs, axis=0)
    out["brier"] = safe_divide(w @ data.brier_sums, w @ data.unit_counts)
    return out


# ---- bootstrap ---------------------------------------------------------------
def iter_bootstrap_indices(
    n_clusters: int, n_boot: int = DEFAULT_N_BOOT, random_state: int | None = 0
) -> Iterator[np.ndarray]:
    """Cluster draws with replacement, in blocks of rows: ``rng.integers(0, n, (rows, n))`` per block.

    ``rng = default_rng(random_state)``; a block holds ``max(1, INDEX_BLOCK_ELEMENTS // n)`` replicates, so
    memory stays bounded for large cohorts. The stream depends only on (n_clusters, n_boot, random_state).
    """
    if n_clusters < 1 or n_boot < 1:
        raise EvaluationError(
            f"Bootstrap needs at least one patient and one replicate; got {n_clusters}, {n_boot}."
        )
    rng = np.random.default_rng(random_state)
    rows = max(1, INDEX_BLOCK_ELEMENTS // n_clusters)
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n_clusters, size=(min(rows, n_boot - start), n_clusters))


def bootstrap_indices(
    n_clusters: int, n_boot: int = DEFAULT_N_BOOT, random_state: int | None = 0
) -> np.ndarray:
    """All (n_boot, n_clusters) draws of `iter_bootstrap_indices` (row b = clusters of replicate b)."""
    return np.concatenate(list(iter_bootstrap_indices(n_clusters, n_boot, random_state)))


def indices_to_weights(indices: np.ndarray, n_clusters: int) -> np.ndarray:
    """Multiplicity matrix (B, G) from drawn indices (B, G) with one bincount."""
    b = indices.shape[0]
    flat = (indices + n_clusters * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_clusters).reshape(b, n_clusters).astype(float)


def replicate_metrics(
    datas: Sequence[ClusteredData], indices: np.ndarray | Iterable[np.ndarray]
) -> list[dict[str, np.ndarray]]:
    """Metrics of every replicate for every model in ``datas`` (same resamples: paired).

    ``indices``: a (B, G) array or an iterable of such blocks (`iter_bootstrap_indices`).
    """
    n_clusters = datas[0].n_clusters
    chunk = max(1, CHUNK_ELEMENTS // max(d.row_width for d in datas))
    blocks = [indices] if isinstance(indices, np.ndarray) else indices
    results: list[dict[str, list]] = [{} for _ in datas]
    for block in blocks:
        for start in range(0, block.shape[0], chunk):
            w = indices_to_weights(block[start : start + chunk], n_clusters)
            for res, data in zip(results, datas, strict=True):
                for key, val in metrics_from_weights(data, w).items():
                    res.setdefault(key, []).append(val)
    return [{k: np.concatenate(v) for k, v in res.items()} for res in results]


def jackknife_metrics(data: ClusteredData) -> dict[str, np.ndarray]:
    """Leave-one-cluster-out values of every metric (for the BCa acceleration), in chunks of rows."""
    g = data.n_clusters
    chunk = max(1, CHUNK_ELEMENTS // data.row_width)
    parts: dict[str, list] = {}
    for start in range(0, g, chunk):
        w = np.ones((min(chunk, g - start), g))
        w[np.arange(w.shape[0]), start + np.arange(w.shape[0])] = 0.0
        for key, val in metrics_from_weights(data, w).items():
            parts.setdefault(key, []).append(val)
    return {k: np.concatenate(v) for k, v in parts.items()}


def percentile_bounds(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite values (NumPy's linear interpolation)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bca_bounds(
    values: np.ndarray, estimate: float, jackknife: np.ndarray, level: float
) -> tuple[float, float]:
    """Bias-corrected and accelerated interval (Efron 1987); NaN when not computable."""
    from scipy import stats

    finite = values[np.isfinite(values)]
    jack = jackknife[np.isfinite(jackknife)]
    if finite.size == 0 or not np.isfinite(estimate) or jack.size < 2:
        return float("nan"), float("nan")
    prop = (np.sum(finite < estimate) + 0.5 * np.sum(finite == estimate)) / finite.size
    z0 = stats.norm.ppf(np.clip(prop, 1 / (finite.size + 1), finite.size / (finite.size + 1)))
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d**2) ** 1.5
    accel = np.sum(d**3) / denom if denom > 0 else 0.0
    z = stats.norm.ppf([0.5 - level / 2, 0.5 + level / 2])
    adj = stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    lo, hi = np.percentile(finite, 100 * adj)
    return float(lo), float(hi)


def summarise(
    name: str,
    estimate: float,
    reps: np.ndarray,
    *,
    level: float,
    method: str,
    n: int,
    jackknife: np.ndarray | None = None,
    reason: str | None = None,
) -> Interval:
    """Interval of one metric from its replicate values."""
    n_undefined = int(np.sum(~np.isfinite(reps)))
    if method == "bca" and jackknife is not None:
        lo, hi = bca_bounds(reps, estimate, jackknife, level)
    else:
        lo, hi = percentile_bounds(reps, level)
    if not np.isfinite(estimate) and reason is None:
        reason = f"{name} undefined on these data"
    elif n_undefined and reason is None:
        reason = f"{name} undefined in {n_undefined} of {reps.size} resamples (left out of the interval)"
    return Interval(float(estimate), lo, hi, level, method, n, int(reps.size), n_undefined, reason)


def _check_method(method: str) -> None:
    if method not in CI_METHODS:
        raise EvaluationError(f"Unknown interval method {method!r}; use one of {', '.join(CI_METHODS)}.")


def bootstrap_metrics(
    y_true,
    y_pred,
    y_score,
    *,
    groups=None,
    class_names: Sequence[str] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    method: str = "percentile",
    random_state: int | None = 0,
    indices: np.ndarray | None = None,
) -> dict[str, Interval]:
    """Point estimates and bootstrap intervals of every metric, resampling ``groups`` (patients).

    Args:
        y_true, y_pred: (n,) class indices; y_score: (n, K) probabilities.
        groups: (n,) patient ids; rows of one patient are drawn together. Default: one row per patient.
        indices: explicit (B, G) cluster draws (e.g. all resamples of a tiny set); overrides n_boot/seed.
    Returns:
        ``{"accuracy": Interval, "sensitivity:COVID-19": Interval, "auc_macro": ..., ...}``.
    """
    _check_method(method)
    data = cluster_data(y_true, y_pred, y_score, groups=groups, class_names=class_names)
    idx = (
        iter_bootstrap_indices(data.n_clusters, n_boot, random_state)
        if indices is None
        else np.asarray(indices)
    )
    reps = replicate_metrics([data], idx)[0]
    point = metrics_from_weights(data, np.ones((1, data.n_clusters)))
    jack = jackknife_metrics(data) if method == "bca" else {}
    return {
        key: summarise(
            key,
            float(point[key][0]),
            reps[key],
            level=level,
            method=method,
            n=data.n_clusters,
            jackknife=jack.get(key),
        )
        for key in point
    }


# ---- DeLong -------------------------------------------------------------------
@dataclass(frozen=True)
class DeLongTest:
    """Paired DeLong test of two correlated AUCs on the same cases."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def delong_covariance(y_true, y_scores) -> tuple[np.ndarray, np.ndarray]:
    """Fast DeLong (Sun & Xu 2014): AUCs (M,) and their covariance (M, M) for scores (M, n) or (n,)."""
    from scipy import stats

    yt = np.asarray(y_true).astype(bool)
    scores = np.atleast_2d(np.asarray(y_scores, float))
    m, n = int(yt.sum()), int((~yt).sum())
    if m < 2 or n < 2:
        raise EvaluationError(f"DeLong needs at least 2 positive and 2 negative cases; got {m} and {n}.")
    pos, neg = scores[:, yt], scores[:, ~yt]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def delong_interval(y_true, y_score, *, level: float = DEFAULT_LEVEL) -> Interval:
    """AUC with DeLong's normal-approximation interval, clipped to [0, 1] (as pROC)."""
    from scipy import stats

    yt = np.asarray(y_true).astype(bool)
    if yt.all() or not yt.any():
        nan = float("nan")
        return Interval(nan, nan, nan, level, "delong", yt.size, reason="AUC undefined: one class only")
    aucs, cov = delong_covariance(yt, y_score)
    se = math.sqrt(cov[0, 0])
    z = stats.norm.ppf(0.5 + level / 2)
    auc = float(aucs[0])
    return Interval(
        auc, float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se)), level, "delong", int(yt.size)
    )


def delong_test(y_true, score_a, score_b) -> DeLongTest:
    """Two-sided paired DeLong test of AUC(a) == AUC(b)."""
    from scipy import stats

    aucs, cov = delong_covariance(y_true, np.vstack([score_a, score_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return DeLongTest(float(aucs[0]), float(aucs[1]), diff, se, float(z), float(2 * stats.norm.sf(abs(z))))
