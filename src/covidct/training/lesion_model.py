"""A small, readable model on the weight-free lesion features: L2 logistic regression.

Thirteen figures per slice (`covidct.quant.slice_features.FEATURE_NAMES`) and one weight each: a
model a radiologist can read ("more peripheral ground glass -> more likely COVID-19") and that has
too few parameters to learn an export's look. Fitted by Newton's method (the solver of
`covidct.evaluation.fusion`), features standardised on the training slices. Slices whose lungs were
not found (NaN features) get the training medians.

Its regularisation and sample weighting are chosen **inside the training sources** by
leave-one-group-out (`select_by_groups`): each training group is held out in turn, the model fitted
on the others, and the setting with the best mean held-out AUC wins, so the choice never sees the
fold's own held-out source or its validation split.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from covidct.errors import ConfigError
from covidct.evaluation.fusion import fit_logistic as newton_logistic
from covidct.evaluation.fusion import sigmoid
from covidct.evaluation.metrics import binary_auc

C_GRID = (0.01, 0.1, 1.0, 10.0)
"""Inverse L2 strengths tried by `select_by_groups` (sklearn's C: larger = weaker penalty)."""
WEIGHTINGS = ("none", "group-class")
"""Sample weighting: ``none``; ``group-class`` = every (group, class) cell weighs the same in total."""
MIN_SCALE = 1e-6
"""Feature standard deviations below this (a constant feature) are treated as 1."""


def sample_weights(y: np.ndarray, groups: Sequence[str], weighting: str) -> np.ndarray:
    """(N,) weights summing to N: all ones, or equal total weight per (group, class) cell."""
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting {weighting!r} is not one of {WEIGHTINGS}.")
    n = len(y)
    if weighting == "none":
        return np.ones(n)
    cells = [f"{g}|{int(c)}" for g, c in zip(groups, y, strict=True)]
    names, index, counts = np.unique(cells, return_inverse=True, return_counts=True)
    return n / (len(names) * counts[index])


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, weights: np.ndarray | None = None) -> np.ndarray:
    """Weights (D + 1,) of an L2 logistic regression (intercept last, not penalised).

    Minimises  sum_i w_i * logloss_i + ||beta||^2 / (2 c)  on already standardised ``x`` (N, D), with
    the Newton solver of `covidct.evaluation.fusion.fit_logistic`.
    """
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    l2 = np.append(np.full(d, 1.0 / c), 0.0)
    beta, _, _ = newton_logistic(design, np.asarray(y, np.float64), l2=l2, weights=weights)
    return beta


@dataclass
class LesionModel:
    """Standardise -> logistic regression. ``coef`` is per standardised feature, ``intercept`` last."""

    feature_names: list[str]
    median: list[float]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    c: float
    weighting: str
    selection: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, feature_names: Sequence[str], *, c: float = 1.0,
        weighting: str = "none", groups: Sequence[str] | None = None,
    ) -> LesionModel:
        """Fit on features ``x`` (N, D; NaN rows allowed) and labels ``y`` (N,; 1 = COVID-19)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.ndim != 2 or x.shape[1] != len(feature_names) or len(y) != len(x):
            raise ConfigError(
                f"features {x.shape} do not match {len(feature_names)} names / {len(y)} labels."
            )
        if len(np.unique(y)) < 2:
            raise ConfigError("The lesion model needs both classes in its training slices.")
        median = np.nanmedian(x, axis=0)
        median = np.where(np.isfinite(median), median, 0.0)
        filled = np.where(np.isfinite(x), x, median)
        mean, scale = filled.mean(0), filled.std(0)
        scale = np.where(scale < MIN_SCALE, 1.0, scale)
        weights = sample_weights(y, groups if groups is not None else ["all"] * len(y), weighting)
        beta = fit_logistic((filled - mean) / scale, y, c, weights)
        return cls(list(feature_names), median.tolist(), mean.tolist(), scale.tolist(),
                   beta[:-1].tolist(), float(beta[-1]), float(c), weighting)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of COVID-19 (N,) for features ``x`` (N, D)."""
        x = np.asarray(x, np.float64)
        filled = np.where(np.isfinite(x), x, np.asarray(self.median))
        z = (filled - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef) + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(COVID-19) (N,) in [0, 1]."""
        return sigmoid(self.decision(x))

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> LesionModel:
        return cls(**json.loads(Path(path).read_text()))

    def describe(self) -> str:
        """The weights, largest first, as one line per feature (for model cards)."""
        pairs = sorted(zip(self.feature_names, self.coef, strict=True), key=lambda p: -abs(p[1]))
        return "\n".join(f"{name:24s} {w:+.3f}" for name, w in pairs)


def select_by_groups(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], feature_names: Sequence[str],
) -> LesionModel:
    """The `LesionModel` over (`C_GRID` x `WEIGHTINGS`) with the best mean leave-one-group-out AUC
    on the groups that hold both classes, refitted on all of ``x``; ``selection`` records every
    candidate's mean AUC. With fewer than two such groups, C = 1 and no weighting."""
    x, y, groups = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(groups)
    inner = [g for g in np.unique(groups) if len(np.unique(y[groups == g])) == 2]
    candidates = list(itertools.product(C_GRID, WEIGHTINGS))
    scores: dict[str, float] = {}
    if len(inner) >= 2:
        for c, weighting in candidates:
            aucs = []
            for g in inner:
                train = groups != g
                if len(np.unique(y[train])) < 2:
                    continue
                model = LesionModel.fit(x[train], y[train], feature_names, c=c, weighting=weighting,
                                        groups=groups[train])
                aucs.append(binary_auc(y[~train], model.decision(x[~train])))
            scores[f"C={c:g},{weighting}"] = float(np.mean(aucs)) if aucs else float("nan")
        best = max(candidates, key=lambda cw: np.nan_to_num(scores[f"C={cw[0]:g},{cw[1]}"], nan=-1.0))
    else:
        best = (1.0, "none")
    model = LesionModel.fit(x, y, feature_names, c=best[0], weighting=best[1], groups=groups)
    model.selection = scores
    return model
