"""Reader studies: radiologists' calls with and without AI, against truth, the model and each other.

Reads CSV: ``reader,case_id,call,with_ai[,confidence]``; ``call`` is a class name (canonicalised),
``with_ai`` is true/false (1/0, yes/no). Reader metrics are binary: the positive class (COVID-19)
against the rest.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from covidct.classes import canonical_class
from covidct.errors import CovidCTError, EvaluationError
from covidct.evaluation.compare import mcnemar_test, paired_bootstrap
from covidct.evaluation.intervals import DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, wilson_interval
from covidct.evaluation.metrics import cohen_kappa_score, kappa_from_confusion

READ_COLUMNS = ("reader", "case_id", "call", "with_ai")
TRUE_WORDS = ("1", "true", "yes", "y", "with", "ai")
FALSE_WORDS = ("0", "false", "no", "n", "without", "")
KAPPA_CATEGORIES = (
    (0.20, "poor"),
    (0.40, "fair"),
    (0.60, "moderate"),
    (0.80, "good"),
    (float("inf"), "excellent"),
)
BINARY_NAMES = ("other", "positive")
READER_COMPARED = ("accuracy", "sensitivity", "specificity")


class ReadsFormatError(EvaluationError):
    """A reads CSV is malformed or names cases that are not in the predictions."""


@dataclass(frozen=True)
class ReadTable:
    """Reader calls, one row per (reader, case, condition)."""

    reader: np.ndarray
    case_id: np.ndarray
    call: np.ndarray  # canonical class names
    with_ai: np.ndarray  # bool
    confidence: np.ndarray | None = None


def kappa_category(kappa: float) -> str:
    """Liu et al.'s categories: poor <= 0.20 < fair <= 0.40 < moderate <= 0.60 < good <= 0.80 < excellent."""
    if not np.isfinite(kappa):
        return "undefined"
    return next(name for upper, name in KAPPA_CATEGORIES if kappa <= upper)


def _parse_bool(value: str, row: int) -> bool:
    v = value.strip().lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    raise ReadsFormatError(
        f"Reads row {row}: with_ai={value!r} is not true/false (use 1/0, true/false, yes/no)."
    )


def read_reads(path: str | Path) -> ReadTable:
    """Read and validate a reads CSV."""
    path = Path(path)
    if not path.is_file():
        raise ReadsFormatError(f"Reads file {path} does not exist.")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in reader.fieldnames or []]
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    missing = [c for c in READ_COLUMNS if c not in cols]
    if missing:
        raise ReadsFormatError(
            f"{path}: missing column(s) {missing}; expected reader,case_id,call,with_ai[,confidence]."
        )
    calls = []
    for i, r in enumerate(rows, start=2):
        try:
            calls.append(canonical_class(r["call"]))
        except CovidCTError as exc:
            raise ReadsFormatError(f"{path} line {i}: unknown call {r['call']!r}. {exc}") from None
    keys = [(r["reader"], r["case_id"], r["with_ai"].lower()) for r in rows]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ReadsFormatError(
            f"{path}: duplicate reads (reader, case_id, with_ai) {dup}; keep one call each."
        )
    conf = None
    if "confidence" in cols:
        conf = np.array([float(r["confidence"]) if r["confidence"] else np.nan for r in rows])
    return ReadTable(
        np.array([r["reader"] for r in rows]),
        np.array([r["case_id"] for r in rows]),
        np.array(calls),
        np.array([_parse_bool(r["with_ai"], i) for i, r in enumerate(rows, 2)]),
        conf,
    )


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an (items, categories) table of rating counts; every item rated by the same number."""
    counts = np.asarray(counts, float)
    m = counts.sum(axis=1)
    if counts.shape[0] == 0 or np.any(m != m[0]) or m[0] < 2:
        raise EvaluationError("Fleiss' kappa needs every case rated by the same number (>= 2) of readers.")
    m = m[0]
    p_i = (np.sum(counts**2, axis=1) - m) / (m * (m - 1))
    p_j = counts.sum(axis=0) / counts.sum()
    p_e = np.sum(p_j**2)
    return float((p_i.mean() - p_e) / (1 - p_e)) if p_e < 1 else float("nan")


def _binary(calls: np.ndarray, positive: str) -> np.ndarray:
    return (calls == positive).astype(np.int64)


def _reader_metrics(truth: np.ndarray, call: np.ndarray, level: float) -> dict[str, Interval | float]:
    tp = int(np.sum((truth == 1) & (call == 1)))
    tn = int(np.sum((truth == 0) & (call == 0)))
    kappa = float(kappa_from_confusion(np.bincount(truth * 2 + call, minlength=4).reshape(2, 2)))
    return {
        "sensitivity": wilson_interval(tp, int(truth.sum()), level=level),
        "specificity": wilson_interval(tn, int((truth == 0).sum()), level=level),
        "accuracy": wilson_interval(tp + tn, truth.size, level=level),
        "kappa_vs_truth": kappa,
    }


def _scores(calls: np.ndarray) -> np.ndarray:
    return np.eye(2)[calls]


def _paired(truth, call_a, call_b, n_boot, level, seed) -> dict:
    diffs = paired_bootstrap(
        truth,
        call_a,
        _scores(call_a),
        call_b,
        _scores(call_b),
        class_names=BINARY_NAMES,
        metrics=READER_COMPARED,
        n_boot=n_boot,
        level=level,
        random_state=seed,
    )
    keep = {
        "accuracy": "accuracy",
        "sensitivity": "sensitivity:positive",
        "specificity": "specificity:positive",
    }
    return {
        "mcnemar": mcnemar_test(call_a == truth, call_b == truth).to_dict(),
        **{name: diffs[key].to_dict() for name, key in keep.items()},
    }


def reader_study(
    reads: ReadTable,
    truth: Mapping[str, int],
    model_call: Mapping[str, int],
    *,
    positive: str,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    random_state: int | None = 0,
) -> dict:
    """Per-reader metrics (Wilson intervals), reader vs model, with vs without AI, agreement.

    Args:
        truth: case_id -> 1 if the case is ``positive`` else 0.
        model_call: case_id -> 1 if the model (at its operating point) calls the case ``positive``.
    """
    unknown = sorted(set(reads.case_id) - set(truth))
    if unknown:
        raise ReadsFormatError(
            f"Reads name case(s) not in the predictions: {unknown[:10]}; "
            "use the predictions' case_id or patient_id values."
        )
    y = np.array([truth[c] for c in reads.case_id])
    call = _binary(reads.call, positive)
    model_call_arr = np.array([int(model_call[c]) for c in reads.case_id])
    result: dict = {"positive_class": positive, "readers": [], "with_vs_without_ai": [], "agreement": []}
    for name in np.unique(reads.reader):
        for ai in (False, True):
            sel = (reads.reader == name) & (reads.with_ai == ai)
            if not sel.any():
                continue
            entry = {
                "reader": str(name),
                "with_ai": ai,
                "n": int(sel.sum()),
                **{
                    k: (v.to_dict() if isinstance(v, Interval) else v)
                    for k, v in _reader_metrics(y[sel], call[sel], level).items()
                },
            }
            entry["vs_model"] = _paired(y[sel], call[sel], model_call_arr[sel], n_boot, level, random_state)
            result["readers"].append(entry)
        result["with_vs_without_ai"] += _with_without(reads, name, y, call, n_boot, level, random_state)
    for ai in (False, True):
        result["agreement"] += _agreement(reads, call, ai)
    return result


def _with_without(reads: ReadTable, name, y, call, n_boot, level, seed) -> list[dict]:
    mine = reads.reader == name
    without = {c: i for i, c in enumerate(reads.case_id) if mine[i] and not reads.with_ai[i]}
    with_ai = {c: i for i, c in enumerate(reads.case_id) if mine[i] and reads.with_ai[i]}
    common = sorted(set(without) & set(with_ai))
    if not common:
        return []
    iw, ia = np.array([with_ai[c] for c in common]), np.array([without[c] for c in common])
    out = _paired(y[iw], call[iw], call[ia], n_boot, level, seed)
    return [{"reader": str(name), "n": len(common), "difference": "with AI - without AI", **out}]


def _agreement(reads: ReadTable, call: np.ndarray, ai: bool) -> list[dict]:
    sel = reads.with_ai == ai
    readers = sorted(set(reads.reader[sel]))
    if len(readers) < 2:
        return []
    table = {(r, c): int(v) for r, c, v in zip(reads.reader[sel], reads.case_id[sel], call[sel], strict=True)}
    cases = sorted(c for c in set(reads.case_id[sel]) if all((r, c) in table for r in readers))
    out = []
    for a, b in combinations(readers, 2):
        k = cohen_kappa_score([table[(a, c)] for c in cases], [table[(b, c)] for c in cases], labels=[0, 1])
        out.append(
            {"with_ai": ai, "readers": [a, b], "n": len(cases), "kappa": k, "category": kappa_category(k)}
        )
    if cases:
        counts = np.array([[sum(table[(r, c)] == v for r in readers) for v in (0, 1)] for c in cases])
        fk = fleiss_kappa(counts)
        out.append(
            {
                "with_ai": ai,
                "readers": readers,
                "n": len(cases),
                "fleiss_kappa": fk,
                "category": kappa_category(fk),
            }
        )
    return out


def reader_points(study: dict) -> list[dict]:
    """(reader, with_ai, fpr, tpr) of each reader for the ROC plot."""
    pts = []
    for r in study["readers"]:
        sens, spec = r["sensitivity"]["estimate"], r["specificity"]["estimate"]
        if sens is not None and spec is not None:
            pts.append({"reader": r["reader"], "with_ai": r["with_ai"], "fpr": 1 - spec, "tpr": sens})
    return pts
