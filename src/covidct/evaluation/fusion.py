"""Fused score: the model's COVID-19 probability and the quantitative CT's involvement in one number.

    p_fused = sigmoid(w0 + w1 * logit(p_model) + w2 * log1p(involvement %))

The weights are fitted by maximum likelihood (Newton / IRLS) on a patient-level VALIDATION table with
both columns, never on test: `read_fusion_table` refuses any row whose ``split`` is not a validation
split. The fitted weights travel in a checkpoint's ``extra["fusion"]`` (`FusedScore.to_dict`), with
the file, its SHA-256, the patients per class and the date, so the Predictor can apply them.

Table layout (CSV): ``patient_id,label,prob_COVID-19,involvement_pct,split`` (other columns ignored;
the probability column may use any alias `canonical_class` accepts, e.g. ``prob_covid``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covidct.classes import COVID, canonical_class
from covidct.errors import CovidCTError, EvaluationError

FUSION_KEY = "fusion"
"""Key of the fitted weights in a checkpoint's ``extra``."""
FORMULA = "sigmoid(intercept + model_logit * logit(p_model) + involvement * log1p(involvement_pct))"
VALIDATION_SPLITS = ("val", "valid", "validation")
INVOLVEMENT_COLUMN = "involvement_pct"
PROB_PREFIX = "prob_"
PROB_EPS = 1e-6
"""Model probabilities are clipped to [eps, 1 - eps] before the logit."""
MAX_ITER = 100
TOLERANCE = 1e-10
RIDGE = 1e-8
"""Tiny L2 on the Hessian so a singular design still gives a step (not a prior: it barely moves the MLE)."""
MIN_PER_CLASS = 2
LABEL = "fused score (model probability + quantitative CT involvement; weights fitted on validation data)"


class FusionDataError(EvaluationError):
    """The table to fit the fused score on is unusable (test split, missing column, one class...)."""


@dataclass(frozen=True)
class FusionTable:
    """Patient-level fitting data. Arrays are (n,): COVID-19 prob, involvement %, 1 = COVID-19."""

    patient_id: np.ndarray
    p_model: np.ndarray
    involvement_pct: np.ndarray
    is_covid: np.ndarray
    origin: str


def features(p_model: np.ndarray | float, involvement_pct: np.ndarray | float) -> np.ndarray:
    """(n, 3) design matrix: [1, logit(p_model), log1p(involvement %)]."""
    p = np.clip(np.atleast_1d(np.asarray(p_model, np.float64)), PROB_EPS, 1 - PROB_EPS)
    inv = np.atleast_1d(np.asarray(involvement_pct, np.float64))
    if np.any(inv < 0) or not np.all(np.isfinite(inv)):
        raise FusionDataError("involvement % must be finite and >= 0.")
    return np.stack([np.ones_like(p), np.log(p / (1 - p)), np.log1p(inv)], axis=1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-z)), elementwise."""
    return 1.0 / (1.0 + np.exp(-z))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: np.ndarray | None = None, weights: np.ndarray | None = None
) -> tuple[np.ndarray, int, bool]:
    """Logistic weights by Newton's method (IRLS): maximum likelihood, or L2-penalised with ``l2``.

    Args:
        x: (n, d) design matrix (an intercept is a column of ones); y: (n,) 0/1 targets.
        l2: (d,) penalty per weight (minimises weighted log-loss + sum(l2 * w**2) / 2; 0 leaves a weight
            free, e.g. the intercept); None = no penalty.
        weights: (n,) sample weights of the log-loss; None = all 1.
    Returns:
        (d,) weights, iterations run, whether the step converged.
    """
    d = x.shape[1]
    penalty = np.zeros(d) if l2 is None else np.asarray(l2, np.float64)
    sample = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    w = np.zeros(d)
    for it in range(1, MAX_ITER + 1):
        p = sigmoid(x @ w)
        grad = x.T @ (sample * (y - p)) - penalty * w
        hess = (x * (sample * p * (1 - p))[:, None]).T @ x + np.diag(penalty + RIDGE)
        step = np.linalg.solve(hess, grad)
        w = w + step
        if float(np.max(np.abs(step))) < TOLERANCE ** 0.5:
            return w, it, True
    return w, MAX_ITER, False


@dataclass(frozen=True)
class FusedScore:
    """Fitted fusion weights and where they came from; `apply` gives the fused COVID-19 probability."""

    intercept: float
    model_logit: float
    involvement: float
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def apply(self, p_model: float, involvement_pct: float) -> float:
        """Fused probability of COVID-19 for one patient (involvement in % of lung volume)."""
        w = np.array([self.intercept, self.model_logit, self.involvement])
        return float(sigmoid(features(p_model, involvement_pct) @ w)[0])

    def to_dict(self) -> dict[str, Any]:
        return {"formula": FORMULA, "weights": {"intercept": self.intercept, "model_logit": self.model_logit,
                                                "involvement": self.involvement},
                "fitted_on": dict(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusedScore:
        try:
            w = data["weights"]
            return cls(float(w["intercept"]), float(w["model_logit"]), float(w["involvement"]),
                       dict(data.get("fitted_on") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FusionDataError(
                f"fusion weights are malformed ({exc!r}); refit with `covidct fuse fit`.") from exc

    @classmethod
    def fit(cls, table: FusionTable) -> FusedScore:
        """Maximum-likelihood weights on ``table`` (validation patients)."""
        x = features(table.p_model, table.involvement_pct)
        y = table.is_covid.astype(np.float64)
        w, iterations, converged = fit_logistic(x, y)
        p = np.clip(sigmoid(x @ w), 1e-12, 1 - 1e-12)
        log_loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        n_covid = int(y.sum())
        fitted_on = {"file": table.origin, "sha256": _sha256(table.origin), "split": "validation",
                     "n_patients": {COVID: n_covid, "other": int(y.size - n_covid)},
                     "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                     "iterations": iterations, "converged": converged, "log_loss": round(log_loss, 6)}
        return cls(float(w[0]), float(w[1]), float(w[2]), fitted_on)


def _sha256(path: str) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def _covid_column(columns: list[str], origin: str) -> str:
    for col in columns:
        if col.startswith(PROB_PREFIX):
            try:
                if canonical_class(col[len(PROB_PREFIX):]) == COVID:
                    return col
            except CovidCTError:
                continue
    raise FusionDataError(f"{origin}: no prob_COVID-19 column (found {columns}); write the model's "
                          "COVID-19 probability per patient as prob_COVID-19.")


def _check_split(split: str, row: int, origin: str) -> None:
    value = split.strip().lower()
    if value == "test":
        raise FusionDataError(f"{origin} row {row} is from the test split: fusion weights are chosen on "
                              "validation data, never on test. Give a validation predictions table.")
    if value not in VALIDATION_SPLITS:
        raise FusionDataError(f"{origin} row {row} has split {split!r}; fusion weights are fitted on "
                              f"validation rows only (split one of {', '.join(VALIDATION_SPLITS)}).")


def read_fusion_table(path: str | Path) -> FusionTable:
    """Read and check a patient-level validation table (see the module docstring for columns)."""
    origin = str(path)
    if not Path(path).is_file():
        raise FusionDataError(f"{origin} does not exist; give a validation predictions CSV.")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    missing = [c for c in ("patient_id", "label", INVOLVEMENT_COLUMN, "split") if c not in columns]
    if missing:
        raise FusionDataError(f"{origin} lacks column(s) {missing}; need patient_id,label,prob_COVID-19,"
                              f"{INVOLVEMENT_COLUMN},split (split 'val' on every row).")
    prob_col = _covid_column(columns, origin)
    ids, probs, invs, covid = [], [], [], []
    for i, row in enumerate(rows, start=2):
        _check_split(row["split"], i, origin)
        try:
            probs.append(float(row[prob_col]))
            invs.append(float(row[INVOLVEMENT_COLUMN]))
            covid.append(canonical_class(row["label"]) == COVID)
        except (TypeError, ValueError) as exc:
            raise FusionDataError(f"{origin} row {i}: {exc}") from exc
        ids.append(row["patient_id"])
    counts = Counter(ids)
    repeated = [p for p, n in counts.items() if n > 1]
    if repeated:
        raise FusionDataError(f"{origin}: patients with several rows {repeated[:10]}; the fused score is "
                              "patient-level, give one row per patient.")
    table = FusionTable(np.asarray(ids), np.asarray(probs), np.asarray(invs), np.asarray(covid, bool), origin)
    if not np.all((table.p_model >= 0) & (table.p_model <= 1)):
        raise FusionDataError(f"{origin}: {prob_col} must lie in [0, 1].")
    n_covid = int(table.is_covid.sum())
    if min(n_covid, len(ids) - n_covid) < MIN_PER_CLASS:
        raise FusionDataError(f"{origin}: {n_covid} COVID-19 and {len(ids) - n_covid} other patients; need "
                              f"at least {MIN_PER_CLASS} of each to fit the fused score.")
    features(table.p_model, table.involvement_pct)
    return table


def fused_from_extra(extra: dict[str, Any] | None) -> FusedScore | None:
    """The `FusedScore` stored in a checkpoint's ``extra``, or None when it carries none."""
    data = (extra or {}).get(FUSION_KEY)
    return None if not data else FusedScore.from_dict(data)

