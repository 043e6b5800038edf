"""Operating points: choose a threshold on a tuning split, apply it to the test split.

Rules: ``spec:0.95`` (highest sensitivity with specificity >= 0.95), ``sens:0.95`` (highest
specificity with sensitivity >= 0.95), ``youden`` (max sensitivity + specificity - 1). A case is
called positive when its score is >= the threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from covidct.errors import EvaluationError
from covidct.evaluation.metrics import roc_curve

OPERATING_RULES = ("spec:<target>", "sens:<target>", "youden")


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it achieved on the split it was chosen on."""

    rule: str
    threshold: float
    sensitivity: float
    specificity: float
    n_tuning: int

    def to_dict(self) -> dict:
        return asdict(self)


def parse_rule(rule: str) -> tuple[str, float | None]:
    """``spec:0.95`` -> ("spec", 0.95); ``youden`` -> ("youden", None)."""
    kind, _, value = rule.strip().lower().partition(":")
    hint = f"Use one of {', '.join(OPERATING_RULES)}, e.g. spec:0.95."
    if kind == "youden" and not value:
        return kind, None
    if kind in ("spec", "sens") and value:
        try:
            target = float(value)
        except ValueError:
            raise EvaluationError(f"Operating point {rule!r}: {value!r} is not a number. {hint}") from None
        if not 0.0 < target <= 1.0:
            raise EvaluationError(f"Operating point {rule!r}: the target must lie in (0, 1]. {hint}")
        return kind, target
    raise EvaluationError(f"Unknown operating point {rule!r}. {hint}")


def choose_threshold(y_true, y_score, *, rule: str = "youden") -> OperatingPoint:
    """Threshold meeting ``rule`` on (tuning) data with binary ``y_true``."""
    kind, target = parse_rule(rule)
    yt = np.asarray(y_true).astype(bool)
    if yt.all() or not yt.any():
        raise EvaluationError(
            f"Cannot choose an operating point: the tuning split has only "
            f"{'positive' if yt.all() else 'negative'} "
            "cases. Tune on a split with both classes."
        )
    fpr, tpr, thr = roc_curve(yt, y_score)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the (inf) point that calls nobody positive
    spec = 1 - fpr
    if kind == "spec":
        ok = np.flatnonzero(spec >= target)
        if ok.size == 0:
            raise EvaluationError(f"No threshold reaches specificity {target} on the tuning split.")
        i = ok[np.argmax(tpr[ok])]
    elif kind == "sens":
        ok = np.flatnonzero(tpr >= target)
        i = ok[np.argmax(spec[ok])]
    else:
        i = int(np.argmax(tpr - fpr))
    return OperatingPoint(rule, float(thr[i]), float(tpr[i]), float(spec[i]), int(yt.size))


def apply_threshold(probs: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """Predicted class: ``positive`` when its probability >= threshold, else the arg-max of the others."""
    probs = np.asarray(probs, float)
    others = probs.copy()
    others[:, positive] = -np.inf
    return np.where(probs[:, positive] >= threshold, positive, np.argmax(others, axis=1))
