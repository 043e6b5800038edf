"""Classification metrics with scikit-learn-like signatures ``f(y_true, y_pred_or_score, *, ...)``.

Class labels are integer indices ``0..K-1``. Values that are undefined (0/0, an AUC on a set with
one class) are NaN and emit `UndefinedMetricWarning` with the reason; they are never reported as 0.
Every ``*_from_confusion`` function accepts stacked confusion matrices ``(..., K, K)`` so the
bootstrap computes all replicates at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from covidct.errors import EvaluationError

DEFAULT_CALIBRATION_BINS = 10


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for this data and was returned as NaN."""


def _warn(reason: str) -> None:
    warnings.warn(reason, UndefinedMetricWarning, stacklevel=3)


def _as_labels(y: np.ndarray | Sequence[int], name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise EvaluationError(
            f"{name} must be 1-D class indices, but it is {arr.ndim}-D with shape {arr.shape}."
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise EvaluationError(f"{name} must hold integer class indices; got values like {arr[:3]}.")
        arr = arr.astype(np.int64)
    return arr


def _n_classes(labels: Sequence[int] | None, *arrays: np.ndarray) -> int:
    if labels is not None:
        return len(labels)
    return int(max((a.max() for a in arrays if a.size), default=-1)) + 1


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den == 0 (never 0, never inf)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---- confusion-matrix metrics ---------------------------------------------
def confusion_matrix(
    y_true, y_pred, *, labels: Sequence[int] | None = None, sample_weight=None
) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class (scikit-learn layout)."""
    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise EvaluationError(
            f"y_true has {yt.size} values but y_pred has {yp.size}; give one prediction per case."
        )
    k = _n_classes(labels, yt, yp)
    if labels is not None:
        lut = {lab: i for i, lab in enumerate(labels)}
        keep = np.isin(yt, labels) & np.isin(yp, labels)
        yt = np.array([lut[v] for v in yt[keep]], dtype=np.int64)
        yp = np.array([lut[v] for v in yp[keep]], dtype=np.int64)
        sample_weight = None if sample_weight is None else np.asarray(sample_weight)[keep]
    flat = np.bincount(yt * k + yp, weights=sample_weight, minlength=k * k)
    return flat.reshape(k, k) if sample_weight is not None else flat.reshape(k, k).astype(np.int64)


def per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest sensitivity, specificity, PPV, NPV, F1 from ``(..., K, K)`` matrices.

    Returns arrays of shape ``(..., K)``; 0/0 is NaN.
    """
    cm = np.asarray(cm, float)
    total = cm.sum(axis=(-2, -1))[..., None]
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    actual = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    fn, fp = actual - tp, predicted - tp
    tn = total - tp - fn - fp
    return {
        "sensitivity": safe_divide(tp, tp + fn),
        "specificity": safe_divide(tn, tn + fp),
        "ppv": safe_divide(tp, tp + fp),
        "npv": safe_divide(tn, tn + fn),
        "f1": safe_divide(2 * tp, 2 * tp + fp + fn),
    }


def accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, float)
    return safe_divide(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)))


def kappa_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Cohen's kappa of ``(..., K, K)`` agreement tables; NaN when expected agreement is 1."""
    cm = np.asarray(cm, float)
    n = cm.sum(axis=(-2, -1))
    po = safe_divide(np.trace(cm, axis1=-2, axis2=-1), n)
    pe = safe_divide((cm.sum(axis=-1) * cm.sum(axis=-2)).sum(axis=-1), n**2)
    return safe_divide(po - pe, 1 - pe)


def accuracy_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Fraction of correct predictions."""
    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if yt.size == 0:
        _warn("accuracy undefined: no cases")
        return float("nan")
    w = np.ones(yt.size) if sample_weight is None else np.asarray(sample_weight, float)
    return float(np.sum(w * (yt == yp)) / np.sum(w))


def _per_class(name: str, y_true, y_pred, labels, average: str | None):
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    values = per_class_from_confusion(cm)[name]
    for k in np.flatnonzero(np.isnan(values)):
        _warn(
            f"{name} undefined for class {k}: its denominator is 0 (no cases or no predictions of that kind)"
        )
    if average is None:
        return values
    if average == "macro":
        return float(np.mean(values))  # NaN if any class undefined
    raise EvaluationError(f"average={average!r} is not supported; use None (per class) or 'macro'.")


def sensitivity_score(y_true, y_pred, *, labels=None, average: str | None = None):
    """Per-class recall TP/(TP+FN) (``average=None``) or its macro mean."""
    return _per_class("sensitivity", y_true, y_pred, labels, average)


def specificity_score(y_true, y_pred, *, labels=None, average: str | None = None):
    """Per-class TN/(TN+FP)."""
    return _per_class("specificity", y_true, y_pred, labels, average)


def ppv_score(y_true, y_pred, *, labels=None, average: str | None = None):
    """Per-class precision TP/(TP+FP)."""
    return _per_class("ppv", y_true, y_pred, labels, average)


def npv_score(y_true, y_pred, *, labels=None, average: str | None = None):
    """Per-class TN/(TN+FN)."""
    return _per_class("npv", y_true, y_pred, labels, average)


def f1_score(y_true, y_pred, *, labels=None, average: str | None = None):
    """Per-class F1 = 2TP/(2TP+FP+FN)."""
    return _per_class("f1", y_true, y_pred, labels, average)


def cohen_kappa_score(y1, y2, *, labels=None) -> float:
    """Cohen's kappa between two raters (or truth and prediction)."""
    value = float(kappa_from_confusion(confusion_matrix(y1, y2, labels=labels)))
    if np.isnan(value):
        _warn("kappa undefined: both raters use one single category (expected agreement is 1)")
    return value


# ---- ranking metrics -------------------------------------------------------
def _binary_inputs(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    yt = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, float)
    if yt.shape != s.shape or yt.ndim != 1:
        raise EvaluationError(f"y_true {yt.shape} and y_score {s.shape} must be 1-D of the same length.")
    if not np.isfinite(s).all():
        raise EvaluationError("y_score holds NaN or infinite values; remove them before computing curves.")
    return yt, s


def binary_auc(y_true, y_score, *, sample_weight=None) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count 1/2); NaN with a warning for one class."""
    yt, s = _binary_inputs(y_true, y_score)
    w = np.ones(yt.size) if sample_weight is None else np.asarray(sample_weight, float)
    wp, wn = w[yt].sum(), w[~yt].sum()
    if wp == 0 or wn == 0:
        _warn(f"AUC undefined: the data has only {'negative' if wp == 0 else 'positive'} cases")
        return float("nan")
    uniq, inv = np.unique(s, return_inverse=True)
    neg_w = np.bincount(inv[~yt], w[~yt], uniq.size)
    below = np.cumsum(neg_w) - neg_w
    return float(np.sum(w[yt] * (below[inv[yt]] + 0.5 * neg_w[inv[yt]])) / (wp * wn))


def roc_auc_ovr(y_true, y_score, *, average: str | None = None) -> np.ndarray | float:
    """One-vs-rest AUC of every class (``average=None``) or their macro mean (NaN if any undefined)."""
    yt = _as_labels(y_true, "y_true")
    scores = np.asarray(y_score, float)
    if scores.ndim != 2 or scores.shape[0] != yt.size:
        raise EvaluationError(
            f"y_score must be (n_cases, n_classes); got {scores.shape} for {yt.size} cases."
        )
    aucs = np.array([binary_auc(yt == k, scores[:, k]) for k in range(scores.shape[1])])
    if average is None:
        return aucs
    if average == "macro":
        return float(np.mean(aucs))
    raise EvaluationError(f"average={average!r} is not supported; use None or 'macro'.")


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with predictions positive when score >= threshold; first point (0, 0, inf)."""
    yt, s = _binary_inputs(y_true, y_score)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], yt[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), yt.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = yt.sum(), (~yt).sum()
    if n_pos == 0 or n_neg == 0:
        _warn("ROC curve undefined: only one class present")
    tpr = np.r_[0.0, safe_divide(tps, n_pos)]
    fpr = np.r_[0.0, safe_divide(fps, n_neg)]
    return fpr, tpr, np.r_[np.inf, s_sorted[last]]


def precision_recall_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) ordered by decreasing threshold, ending at recall 0, precision 1."""
    yt, s = _binary_inputs(y_true, y_score)
    fpr, tpr, thr = roc_curve(yt, s)
    tps = tpr[1:] * yt.sum()
    fps = fpr[1:] * (~yt).sum()
    precision = safe_divide(tps, tps + fps)
    return np.r_[precision[::-1], 1.0], np.r_[tpr[1:][::-1], 0.0], thr[1:][::-1]


# ---- calibration -----------------------------------------------------------
def brier_score(y_true, y_prob) -> float:
    """Binary Brier score mean((p - y)^2) (scikit-learn ``brier_score_loss``)."""
    yt, p = _binary_inputs(y_true, y_prob)
    return float(np.mean((p - yt) ** 2))


def multiclass_brier_score(y_true, y_prob) -> float:
    """Mean over cases of sum over classes of (p_k - [y == k])^2 (Brier 1950)."""
    yt = _as_labels(y_true, "y_true")
    probs = np.asarray(y_prob, float)
    onehot = np.eye(probs.shape[1])[yt]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_curve(y_true, y_prob, *, n_bins: int = DEFAULT_CALIBRATION_BINS):
    """Reliability curve, equal-width bins: (fraction positive, mean predicted, count) of non-empty bins."""
    yt, p = _binary_inputs(y_true, y_prob)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    frac = safe_divide(np.bincount(bins, yt.astype(float), n_bins), counts)
    mean_p = safe_divide(np.bincount(bins, p, n_bins), counts)
    keep = counts > 0
    return frac[keep], mean_p[keep], counts[keep]


def expected_calibration_error(y_true, y_prob, *, n_bins: int = DEFAULT_CALIBRATION_BINS) -> float:
    """ECE = sum_b (n_b / n) |fraction positive_b - mean predicted_b| over equal-width bins."""
    frac, mean_p, counts = calibration_curve(y_true, y_prob, n_bins=n_bins)
    if counts.sum() == 0:
        _warn("ECE undefined: no cases")
        return float("nan")
    return float(np.sum(counts * np.abs(frac - mean_p)) / counts.sum())


def undefined_reasons(y_true, y_pred, class_names: Sequence[str]) -> list[str]:
    """Human-readable reasons for every undefined value of the standard metrics on this data."""
    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    reasons = []
    present = np.bincount(yt, minlength=len(class_names))
    predicted = np.bincount(yp, minlength=len(class_names))
    if np.count_nonzero(present) < 2:
        reasons.append(
            "AUC undefined: test set has one class "
            f"({', '.join(c for c, n in zip(class_names, present, strict=True) if n)})"
        )
    for k, name in enumerate(class_names):
        if present[k] == 0:
            reasons.append(
                f"Sensitivity and one-vs-rest AUC of {name} undefined: test set has no {name} cases"
            )
        if present[k] == yt.size and yt.size:
            reasons.append(f"Specificity of {name} undefined: test set has only {name} cases")
        if predicted[k] == 0:
            reasons.append(f"PPV of {name} undefined: the model never predicts {name}")
    return reasons
