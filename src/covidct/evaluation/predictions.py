"""Predictions table: read and validate a predictions CSV, aggregate slices to patients.

CSV layout (docs/architecture.md):
``case_id,patient_id,label,prob_<class>...[,slice_index][,source][,split]``.
``label`` and the ``<class>`` suffixes go through `covidct.classes.canonical_class`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from covidct.classes import canonical_class
from covidct.errors import CovidCTError, EvaluationError

REQUIRED_COLUMNS = ("case_id", "patient_id", "label")
OPTIONAL_COLUMNS = ("slice_index", "source", "split")
PROB_PREFIX = "prob_"
PROB_SUM_TOLERANCE = 1e-3
MAX_IDS_IN_MESSAGE = 10
AGGREGATION_RULES = ("mean", "max", "topk:K", "fraction:T")


class PredictionsFormatError(EvaluationError):
    """A predictions CSV or table is malformed (columns, classes, probabilities, labels)."""


@dataclass(frozen=True)
class PredictionTable:
    """Predictions of one model, one row per slice or per case.

    Attributes:
        case_id, patient_id: (n,) string arrays.
        y_true: (n,) int class indices into ``class_names``.
        probs: (n, K) float probabilities in ``class_names`` order.
        class_names: canonical class names, in the CSV's column order.
        slice_index, source, split: optional (n,) arrays or None.
    """

    case_id: np.ndarray
    patient_id: np.ndarray
    y_true: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]
    slice_index: np.ndarray | None = None
    source: np.ndarray | None = None
    split: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y_true.shape[0])

    @property
    def y_pred(self) -> np.ndarray:
        """Arg-max class index of every row."""
        return np.argmax(self.probs, axis=1)

    @property
    def is_patient_level(self) -> bool:
        """True when every patient has exactly one row."""
        return np.unique(self.patient_id).size == len(self)

    def subset(self, mask: np.ndarray) -> PredictionTable:
        """Rows where ``mask`` is True."""
        opt = {k: (None if getattr(self, k) is None else getattr(self, k)[mask]) for k in OPTIONAL_COLUMNS}
        return replace(
            self,
            case_id=self.case_id[mask],
            patient_id=self.patient_id[mask],
            y_true=self.y_true[mask],
            probs=self.probs[mask],
            **opt,
        )

    def class_index(self, name: str) -> int:
        """Index of a class (canonical or alias) in this table."""
        canon = canonical_class(name)
        if canon not in self.class_names:
            raise EvaluationError(f"Class {name!r} is not in the predictions' classes {self.class_names}.")
        return self.class_names.index(canon)


def _ids(values: Sequence[object]) -> str:
    vals = list(values)
    more = f" (and {len(vals) - MAX_IDS_IN_MESSAGE} more)" if len(vals) > MAX_IDS_IN_MESSAGE else ""
    return ", ".join(str(v) for v in vals[:MAX_IDS_IN_MESSAGE]) + more


def _prob_classes(columns: Sequence[str]) -> tuple[list[str], tuple[str, ...]]:
    prob_cols = [c for c in columns if c.startswith(PROB_PREFIX)]
    if not prob_cols:
        raise PredictionsFormatError(
            f"No probability columns: expected columns named prob_<class> (e.g. prob_Normal, prob_COVID-19); "
            f"got {list(columns)}. Write one probability column per class."
        )
    names = []
    for col in prob_cols:
        try:
            names.append(canonical_class(col[len(PROB_PREFIX) :]))
        except CovidCTError as exc:
            raise PredictionsFormatError(
                f"Probability column {col!r} names an unknown class. {exc}"
            ) from None
    if len(set(names)) != len(names):
        raise PredictionsFormatError(f"Probability columns {prob_cols} name the same class twice ({names}).")
    return prob_cols, tuple(names)


def _parse_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def table_from_rows(
    rows: Sequence[dict[str, str]], columns: Sequence[str], *, origin: str = "table"
) -> PredictionTable:
    """Build and validate a `PredictionTable` from CSV-like dict rows (all values strings)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise PredictionsFormatError(
            f"{origin}: missing required column(s) {missing}; expected "
            f"case_id,patient_id,label,prob_<class>...[,slice_index][,source][,split], got {list(columns)}."
        )
    if not rows:
        raise PredictionsFormatError(f"{origin}: no rows; a predictions file needs at least one prediction.")
    prob_cols, class_names = _prob_classes(columns)
    probs = np.array([[_parse_float(r[c]) for c in prob_cols] for r in rows], dtype=float)
    labels = [r["label"] for r in rows]
    y_true = np.array([_label_index(lab, class_names, i) for i, lab in enumerate(labels)], dtype=np.int64)
    opt = {c: (np.array([r[c] for r in rows]) if c in columns else None) for c in OPTIONAL_COLUMNS}
    if opt["slice_index"] is not None:
        opt["slice_index"] = np.array([int(_parse_float(v)) if v.strip() else -1 for v in opt["slice_index"]])
    table = PredictionTable(
        case_id=np.array([r["case_id"] for r in rows]),
        patient_id=np.array([r["patient_id"] for r in rows]),
        y_true=y_true,
        probs=probs,
        class_names=class_names,
        **opt,
    )
    validate_table(table, origin=origin)
    return table


def _label_index(label: str, class_names: tuple[str, ...], row: int) -> int:
    try:
        canon = canonical_class(label)
    except CovidCTError as exc:
        raise PredictionsFormatError(f"Row {row + 1}: unknown label {label!r}. {exc}") from None
    if canon not in class_names:
        raise PredictionsFormatError(
            f"Row {row + 1}: label {label!r} ({canon}) has no probability column; "
            f"columns cover {class_names}. "
            f"Add prob_{canon} or relabel."
        )
    return class_names.index(canon)


def validate_table(table: PredictionTable, *, origin: str = "table") -> None:
    """Raise `PredictionsFormatError` naming the offending rows / patients when the table is invalid."""
    bad_nan = np.flatnonzero(~np.isfinite(table.probs).all(axis=1))
    if bad_nan.size:
        raise PredictionsFormatError(
            f"{origin}: NaN or non-numeric probabilities in row(s) {_ids(bad_nan + 1)} "
            f"(case_id {_ids(table.case_id[bad_nan])}). Remove those rows or re-run the model."
        )
    out_of_range = np.flatnonzero(((table.probs < 0) | (table.probs > 1)).any(axis=1))
    if out_of_range.size:
        raise PredictionsFormatError(
            f"{origin}: probabilities outside [0, 1] in row(s) {_ids(out_of_range + 1)}; "
            "write softmax outputs."
        )
    bad_sum = np.flatnonzero(np.abs(table.probs.sum(axis=1) - 1.0) > PROB_SUM_TOLERANCE)
    if bad_sum.size:
        raise PredictionsFormatError(
            f"{origin}: probabilities do not sum to 1 (+/-{PROB_SUM_TOLERANCE}) "
            f"in row(s) {_ids(bad_sum + 1)} "
            f"(case_id {_ids(table.case_id[bad_sum])}); write softmax probabilities of every class."
        )
    order = np.argsort(table.patient_id, kind="stable")
    pid, lab = table.patient_id[order], table.y_true[order]
    conflict = np.unique(pid[1:][(pid[1:] == pid[:-1]) & (lab[1:] != lab[:-1])])
    if conflict.size:
        raise PredictionsFormatError(
            f"{origin}: patient(s) {_ids(conflict)} have rows with two different labels; a patient has one "
            "label. Fix the labels or give the scans different patient_id values."
        )
    if table.split is not None:
        spl = table.split[order]
        leak = np.unique(pid[1:][(pid[1:] == pid[:-1]) & (spl[1:] != spl[:-1])])
        if leak.size:
            raise PredictionsFormatError(f"{origin}: patient(s) {_ids(leak)} appear in two splits.")


def read_predictions(path: str | Path) -> PredictionTable:
    """Read and validate a predictions CSV (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsFormatError(
            f"Predictions file {path} does not exist; give the CSV written by training."
        )
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    return table_from_rows(rows, columns, origin=str(path))


def write_predictions(table: PredictionTable, path: str | Path) -> Path:
    """Write a `PredictionTable` as a predictions CSV (inverse of `read_predictions`)."""
    path = Path(path)
    opt = [c for c in OPTIONAL_COLUMNS if getattr(table, c) is not None]
    header = ["case_id", "patient_id", "label"] + [PROB_PREFIX + c for c in table.class_names] + opt
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in range(len(table)):
            writer.writerow(
                [
                    table.case_id[i],
                    table.patient_id[i],
                    table.class_names[table.y_true[i]],
                    *(f"{p:.6g}" for p in table.probs[i]),
                    *(getattr(table, c)[i] for c in opt),
                ]
            )
    return path


# ---- patient aggregation ---------------------------------------------------
@dataclass(frozen=True)
class AggregationRule:
    """How slice probabilities become one patient probability vector."""

    kind: str  # "mean" | "max" | "topk" | "fraction"
    param: float | None = None

    def __str__(self) -> str:
        return self.kind if self.param is None else f"{self.kind}:{self.param:g}"


def parse_aggregation(rule: str | AggregationRule) -> AggregationRule:
    """Parse ``mean``, ``max``, ``topk:5`` or ``fraction:0.5``."""
    if isinstance(rule, AggregationRule):
        return rule
    kind, _, value = str(rule).strip().lower().partition(":")
    hint = f"Use one of {', '.join(AGGREGATION_RULES)} (e.g. topk:5, fraction:0.5)."
    if kind in ("mean", "max") and not value:
        return AggregationRule(kind)
    if kind in ("topk", "fraction") and value:
        try:
            num = float(value)
        except ValueError:
            raise EvaluationError(f"Aggregation {rule!r}: {value!r} is not a number. {hint}") from None
        if kind == "topk" and (num < 1 or num != int(num)):
            raise EvaluationError(f"Aggregation {rule!r}: k must be a whole number >= 1. {hint}")
        if kind == "fraction" and not 0.0 < num < 1.0:
            raise EvaluationError(f"Aggregation {rule!r}: threshold must lie in (0, 1). {hint}")
        return AggregationRule(kind, num)
    raise EvaluationError(f"Unknown aggregation rule {rule!r}. {hint}")


def _group_reduce(
    values: np.ndarray, inverse: np.ndarray, n_groups: int, rule: AggregationRule
) -> np.ndarray:
    """Per-patient reduction of (n, K) values; vectorised over rows via a sort by (patient, value)."""
    n, k = values.shape
    counts = np.bincount(inverse, minlength=n_groups).astype(float)
    if rule.kind == "mean":
        return np.stack([np.bincount(inverse, values[:, j], n_groups) for j in range(k)], 1) / counts[:, None]
    if rule.kind == "fraction":
        hits = (values >= rule.param).astype(float)
        return np.stack([np.bincount(inverse, hits[:, j], n_groups) for j in range(k)], 1) / counts[:, None]
    out = np.empty((n_groups, k))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    for j in range(k):  # per class: sort descending within patient
        order = np.lexsort((-values[:, j], inverse))
        sorted_vals = values[order, j]
        rank = np.arange(n) - starts[inverse[order]]
        top = 1 if rule.kind == "max" else int(rule.param)
        keep = rank < top
        sums = np.bincount(inverse[order][keep], sorted_vals[keep], n_groups)
        out[:, j] = sums / np.minimum(counts, top)
    return out


def aggregate_patients(table: PredictionTable, rule: str | AggregationRule = "mean") -> PredictionTable:
    """One row per patient: probabilities reduced by ``rule`` and renormalised to sum to 1.

    ``mean``: mean slice probability; ``max``: per-class maximum; ``topk:K``: per-class mean of the K
    highest slice probabilities; ``fraction:T``: per-class fraction of slices with probability >= T.
    A patient whose reduced scores are all zero (``fraction`` with no slice above T) falls back to the
    mean probability. ``case_id`` of a patient row is its patient_id.
    """
    rule = parse_aggregation(rule)
    patients, first, inverse = np.unique(table.patient_id, return_index=True, return_inverse=True)
    reduced = _group_reduce(table.probs, inverse, patients.size, rule)
    totals = reduced.sum(axis=1)
    if np.any(totals <= 0):
        mean = _group_reduce(table.probs, inverse, patients.size, AggregationRule("mean"))
        reduced[totals <= 0] = mean[totals <= 0]
        totals = reduced.sum(axis=1)
    opt = {c: (None if getattr(table, c) is None else getattr(table, c)[first]) for c in ("source", "split")}
    return PredictionTable(
        case_id=patients.copy(),
        patient_id=patients,
        y_true=table.y_true[first],
        probs=reduced / totals[:, None],
        class_names=table.class_names,
        **opt,
    )
