"""`evaluate_predictions`: every number with its interval.

Written as metrics.json, report.md, report.html and PNG figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from covidct import RESEARCH_USE_STATEMENT, __version__
from covidct.classes import COVID, canonical_class
from covidct.errors import EvaluationError
from covidct.evaluation.compare import mcnemar_test, paired_bootstrap
from covidct.evaluation.intervals import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    PER_CLASS_METRICS,
    Interval,
    bootstrap_indices,
    bootstrap_metrics,
    delong_interval,
    delong_test,
    wilson_interval,
)
from covidct.evaluation.metrics import (
    brier_score,
    calibration_curve,
    confusion_matrix,
    expected_calibration_error,
    undefined_reasons,
)
from covidct.evaluation.operating_point import OperatingPoint, apply_threshold, choose_threshold
from covidct.evaluation.predictions import (
    PredictionTable,
    aggregate_patients,
    read_predictions,
    table_from_rows,
)
from covidct.evaluation.readers import ReadTable, read_reads, reader_points, reader_study
from covidct.jsonable import to_jsonable

CALIBRATION_BINS = 10
ROC_BAND_REPLICATES = 500
SECTION_TITLES = {
    "summary": "Summary",
    "per_class": "Per-class performance (COVID-Net CT-2 style)",
    "binary": "Detection of {positive} (ai-corona style)",
    "confusion": "Confusion matrix",
    "roc": "ROC curve",
    "calibration": "Calibration",
    "slice_level": "Slice-level metrics (resampled by patient)",
    "operating_point": "Operating point",
    "comparison": "Model comparison",
    "readers": "Reader study",
    "limitations": "Limitations",
    "statement": "Research use",
}


OVERALL_METRICS = ("accuracy", "kappa", "f1_macro", "auc_macro", "brier")


@dataclass
class EvaluationResult:
    """What `evaluate_predictions` wrote and computed."""

    out_dir: Path
    metrics: dict
    figures: list[Path] = field(default_factory=list)

    @property
    def report_html(self) -> Path:
        return self.out_dir / "report.html"


def _load(pred: PredictionTable | str | Path) -> PredictionTable:
    """A `PredictionTable`, a CSV path, or a pandas DataFrame with the CSV's columns."""
    if isinstance(pred, PredictionTable):
        return pred
    if hasattr(pred, "columns") and hasattr(pred, "to_dict"):
        rows = [{str(k): str(v) for k, v in r.items()} for r in pred.to_dict("records")]
        return table_from_rows(rows, [str(c) for c in pred.columns], origin="DataFrame")
    return read_predictions(pred)


def _to_patients(table: PredictionTable, aggregate: str, notes: list[str]) -> PredictionTable:
    if table.is_patient_level:
        return table
    notes.append(
        f"{len(table)} slice rows of {np.unique(table.patient_id).size} patients were aggregated "
        f"to one prediction per patient by the rule '{aggregate}'."
    )
    return aggregate_patients(table, aggregate)


def _split(table: PredictionTable, tune_split: str | None) -> tuple[PredictionTable | None, PredictionTable]:
    if tune_split is None:
        return None, table
    if table.split is None:
        raise EvaluationError(f"--tune-split {tune_split!r} needs a 'split' column in the predictions CSV.")
    tune = table.split == tune_split
    if not tune.any() or tune.all():
        raise EvaluationError(
            f"Split {tune_split!r} holds {int(tune.sum())} of {len(table)} rows; "
            "the tuning split and the rest "
            f"(test) must both be non-empty. Splits present: {sorted(set(table.split.tolist()))}."
        )
    return table.subset(tune), table.subset(~tune)


def _positive_index(table: PredictionTable, positive: str) -> int:
    return table.class_index(positive)


def _per_class(intervals: dict[str, Interval], auc_delong: dict, class_names) -> dict:
    out = {}
    for c in class_names:
        out[c] = {m: intervals[f"{m}:{c}"].to_dict() for m in PER_CLASS_METRICS}
        out[c]["auc"] = intervals[f"auc:{c}"].to_dict()
        out[c]["auc_delong"] = auc_delong.get(c)
    return out


def _binary_block(
    y_bin: np.ndarray, call: np.ndarray, score: np.ndarray, *, n_boot, seed, level, method
) -> dict:
    """Sensitivity, specificity, PPV, NPV, F1, kappa, accuracy, AUC of a binary call (bootstrap + Wilson)."""
    iv = bootstrap_metrics(
        y_bin,
        call,
        np.column_stack([1 - score, score]),
        class_names=("neg", "pos"),
        n_boot=n_boot,
        level=level,
        method=method,
        random_state=seed,
    )
    tp = int(np.sum((y_bin == 1) & (call == 1)))
    tn = int(np.sum((y_bin == 0) & (call == 0)))
    block = {m: iv[f"{m}:pos"].to_dict() for m in PER_CLASS_METRICS}
    block.update(accuracy=iv["accuracy"].to_dict(), kappa=iv["kappa"].to_dict(), auc=iv["auc:pos"].to_dict())
    block["sensitivity_wilson"] = wilson_interval(tp, int(y_bin.sum()), level=level).to_dict()
    block["specificity_wilson"] = wilson_interval(tn, int((y_bin == 0).sum()), level=level).to_dict()
    return block


def _delong_per_class(table: PredictionTable, level: float) -> dict:
    out = {}
    for k, c in enumerate(table.class_names):
        yk = table.y_true == k
        out[c] = (
            delong_interval(yk, table.probs[:, k], level=level).to_dict()
            if min(yk.sum(), (~yk).sum()) >= 2
            else None
        )
    return out


def _calibration(y_bin, prob) -> dict:
    frac, mean_p, counts = calibration_curve(y_bin, prob, n_bins=CALIBRATION_BINS)
    return {
        "n_bins": CALIBRATION_BINS,
        "fraction_positive": frac,
        "mean_predicted": mean_p,
        "count": counts,
        "ece": expected_calibration_error(y_bin, prob, n_bins=CALIBRATION_BINS),
        "brier_binary": brier_score(y_bin, prob),
    }


def _compare(test: PredictionTable, other: PredictionTable, pos: int, *, n_boot, seed, level) -> dict:
    if other.class_names != test.class_names:
        raise EvaluationError(
            f"Compared predictions have classes {other.class_names}, expected {test.class_names}."
        )
    common = np.intersect1d(test.patient_id, other.patient_id)
    if common.size < len(test):
        raise EvaluationError(
            f"Compared predictions cover {common.size} of {len(test)} test patients; "
            "compare models on the same "
            "cases (missing e.g. " + ", ".join(np.setdiff1d(test.patient_id, common)[:5].tolist()) + ")."
        )
    order = {p: i for i, p in enumerate(other.patient_id)}
    b = other.subset(np.array([order[p] for p in test.patient_id]))
    if np.any(b.y_true != test.y_true):
        raise EvaluationError("Compared predictions give different labels for the same patients.")
    diffs = paired_bootstrap(
        test.y_true,
        test.y_pred,
        test.probs,
        b.y_pred,
        b.probs,
        class_names=test.class_names,
        n_boot=n_boot,
        level=level,
        random_state=seed,
    )
    out = {
        "differences": {k: v.to_dict() for k, v in diffs.items()},
        "mcnemar": mcnemar_test(test.y_pred == test.y_true, b.y_pred == b.y_true).to_dict(),
    }
    yk = test.y_true == pos
    if min(yk.sum(), (~yk).sum()) >= 2:
        out["delong"] = delong_test(yk, test.probs[:, pos], b.probs[:, pos]).to_dict()
    return out


def _reads_truth(table: PredictionTable, test: PredictionTable, pos: int, model_call_patient: np.ndarray):
    """case_id or patient_id -> truth / model call, both at patient level."""
    patient_truth = {p: int(y == pos) for p, y in zip(test.patient_id, test.y_true, strict=True)}
    patient_call = dict(zip(test.patient_id, model_call_patient.astype(int).tolist(), strict=True))
    truth, call = dict(patient_truth), dict(patient_call)
    for cid, pid in zip(table.case_id, table.patient_id, strict=True):
        if pid in patient_truth:
            truth[cid], call[cid] = patient_truth[pid], patient_call[pid]
    return truth, call


def _reads_on_test(
    reads: ReadTable, table: PredictionTable, truth: dict, limitations: list[str]
) -> ReadTable:
    """Drop reads of cases that are in the predictions but not in the test split (e.g. the tuning split)."""
    known = set(table.case_id.tolist()) | set(table.patient_id.tolist())
    off_test = np.array([c in known and c not in truth for c in reads.case_id], dtype=bool)
    if not off_test.any():
        return reads
    limitations.append(
        f"{int(off_test.sum())} reads of cases outside the test split were left out of the reader study"
    )
    keep = ~off_test
    return ReadTable(
        reads.reader[keep],
        reads.case_id[keep],
        reads.call[keep],
        reads.with_ai[keep],
        None if reads.confidence is None else reads.confidence[keep],
    )


@dataclass
class Evaluation:
    """What `compute_evaluation` found: the JSON-able ``metrics`` plus what the figures are drawn from."""

    metrics: dict
    test: PredictionTable
    y_bin: np.ndarray
    pos: int
    operating_point: OperatingPoint | None = None
    reader_points: Any = None


def evaluate_predictions(
    predictions: PredictionTable | str | Path,
    *,
    out_dir: str | Path,
    plots: bool = True,
    **options: Any,
) -> EvaluationResult:
    """Evaluate a predictions table at patient level and write a report folder.

    `compute_evaluation` (``options``: reads, aggregate, tune_split, operating_point, positive,
    n_boot, seed, level, ci_method, compare, title) then `render_evaluation`: ``metrics.json`` (each
    number with its interval, n and the limitations), ``report.md``, ``report.html`` and PNG plots.
    """
    return render_evaluation(compute_evaluation(predictions, **options), out_dir, plots=plots)


def compute_evaluation(
    predictions: PredictionTable | str | Path,
    *,
    reads: ReadTable | str | Path | None = None,
    aggregate: str = "mean",
    tune_split: str | None = None,
    operating_point: str | None = None,
    positive: str = COVID,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    ci_method: str = "percentile",
    compare: PredictionTable | str | Path | None = None,
    title: str = "covidct evaluation",
) -> Evaluation:
    """Every number of the report (patient level, bootstrap intervals by patient); writes nothing."""
    positive = canonical_class(positive)
    table = _load(predictions)
    if operating_point is not None and tune_split is None:
        raise EvaluationError(
            "An operating point is chosen on a tuning split: give --tune-split too (e.g. val)."
        )
    notes: list[str] = []
    tune_rows, test_rows = _split(table, tune_split)
    test = _to_patients(test_rows, aggregate, notes)
    pos = _positive_index(test, positive)
    limitations = undefined_reasons(test.y_true, test.y_pred, test.class_names)
    boot = {"n_boot": n_boot, "seed": seed, "level": level}
    m = _header(predictions, test, test_rows, title, positive, aggregate, ci_method, notes, boot)
    m.update(_main_metrics(test, test_rows, pos, ci_method, boot))
    y_bin = (test.y_true == pos).astype(np.int64)
    call = (test.y_pred == pos).astype(np.int64)
    op: OperatingPoint | None = None
    if operating_point is not None:
        tune = _to_patients(tune_rows, aggregate, [])
        op = choose_threshold(
            tune.y_true == tune.class_index(positive), tune.probs[:, pos], rule=operating_point
        )
        call = (apply_threshold(test.probs, pos, op.threshold) == pos).astype(np.int64)
        m["operating_point"] = {
            "chosen_on": {"split": tune_split, **op.to_dict()},
            "test": _binary_block(
                y_bin, call, test.probs[:, pos], n_boot=n_boot, seed=seed, level=level, method=ci_method
            ),
        }
    if compare is not None:
        other = _to_patients(_split(_load(compare), tune_split)[1], aggregate, [])
        m["comparison"] = {
            "other": str(compare) if not isinstance(compare, PredictionTable) else "table",
            **_compare(test, other, pos, n_boot=n_boot, seed=seed, level=level),
        }
    points = None
    if reads is not None:
        reads_t = reads if isinstance(reads, ReadTable) else read_reads(reads)
        truth, model_call = _reads_truth(test_rows, test, pos, call)
        reads_t = _reads_on_test(reads_t, table, truth, limitations)
        m["reader_study"] = reader_study(
            reads_t, truth, model_call, positive=positive, n_boot=n_boot, level=level, random_state=seed
        )
        points = reader_points(m["reader_study"])
    for key, iv in m["overall"].items():
        if iv["n_undefined"] and iv["estimate"] is not None:
            limitations.append(
                f"{key}: undefined in {iv['n_undefined']} of {n_boot} bootstrap resamples "
                "(left out of its interval)"
            )
    m["limitations"] = limitations
    return Evaluation(m, test, y_bin, pos, op, points)


def _header(predictions, test: PredictionTable, test_rows: PredictionTable, title: str, positive: str,
            aggregate: str, ci_method: str, notes: list[str], boot: dict) -> dict:
    """What was evaluated and how (no metrics)."""
    return {
        "title": title,
        "research_use": RESEARCH_USE_STATEMENT,
        "covidct_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": str(predictions) if isinstance(predictions, str | Path) else type(predictions).__name__,
        "classes": list(test.class_names),
        "positive_class": positive,
        "aggregation": aggregate,
        "n_rows": len(test_rows),
        "n_patients": len(test),
        "class_counts": dict(
            zip(
                test.class_names,
                np.bincount(test.y_true, minlength=len(test.class_names)).tolist(),
                strict=True,
            )
        ),
        "level": boot["level"],
        "n_boot": boot["n_boot"],
        "ci_method": ci_method,
        "seed": boot["seed"],
        "resampling_unit": "patient",
        "notes": notes,
    }


def _main_metrics(test: PredictionTable, test_rows: PredictionTable, pos: int, ci_method: str,
                  boot: dict) -> dict:
    """Overall, per-class, binary, confusion, calibration and (slice rows) slice-level metrics."""
    n_boot, seed, level = boot["n_boot"], boot["seed"], boot["level"]
    intervals = bootstrap_metrics(
        test.y_true,
        test.y_pred,
        test.probs,
        class_names=test.class_names,
        n_boot=n_boot,
        level=level,
        method=ci_method,
        random_state=seed,
    )
    y_bin = (test.y_true == pos).astype(np.int64)
    call = (test.y_pred == pos).astype(np.int64)
    m: dict = {
        "overall": {k: intervals[k].to_dict() for k in OVERALL_METRICS},
        "per_class": _per_class(intervals, _delong_per_class(test, level), test.class_names),
        "binary": _binary_block(
            y_bin, call, test.probs[:, pos], n_boot=n_boot, seed=seed, level=level, method=ci_method
        ),
        "confusion_matrix": {
            "labels": list(test.class_names),
            "rows": "true",
            "columns": "predicted",
            "matrix": confusion_matrix(test.y_true, test.y_pred, labels=range(len(test.class_names))),
        },
        "calibration": _calibration(y_bin, test.probs[:, pos]),
    }
    if not test_rows.is_patient_level:
        slice_iv = bootstrap_metrics(
            test_rows.y_true,
            test_rows.y_pred,
            test_rows.probs,
            groups=test_rows.patient_id,
            class_names=test.class_names,
            n_boot=n_boot,
            level=level,
            method=ci_method,
            random_state=seed,
        )
        m["slice_level"] = {k: v.to_dict() for k, v in slice_iv.items()}
    return m


def render_evaluation(evaluation: Evaluation, out_dir: str | Path, *, plots: bool = True) -> EvaluationResult:
    """Write ``metrics.json``, ``report.md``, ``report.html`` and (``plots``) the PNG figures."""
    from covidct.evaluation.templates import render_html, render_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = dict(evaluation.metrics)
    ev = evaluation
    n_boot, seed, level = m["n_boot"], m["seed"], m["level"]
    figures = (_figures(out, ev.test, ev.y_bin, ev.pos, ev.operating_point, ev.reader_points, n_boot, seed,
                        level) if plots else [])
    m["figures"] = [f.name for f in figures]
    m = to_jsonable(m)
    (out / "metrics.json").write_text(json.dumps(m, indent=2), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(m, SECTION_TITLES), encoding="utf-8")
    (out / "report.html").write_text(render_html(m, SECTION_TITLES), encoding="utf-8")
    return EvaluationResult(out, m, figures)


def _figures(out: Path, test: PredictionTable, y_bin, pos, op, points, n_boot, seed, level) -> list[Path]:
    from covidct.evaluation import plots

    figs = [
        plots.plot_confusion_matrix(
            confusion_matrix(test.y_true, test.y_pred, labels=range(len(test.class_names))),
            test.class_names,
            out / "confusion_matrix.png",
        )
    ]
    if 0 < y_bin.sum() < y_bin.size:
        idx = bootstrap_indices(len(test), min(n_boot, ROC_BAND_REPLICATES), seed)
        band = plots.roc_band(y_bin, test.probs[:, pos], idx, level)
        op_xy = None
        if op is not None:
            called = test.probs[:, pos] >= op.threshold
            op_xy = (float(np.mean(called[y_bin == 0])), float(np.mean(called[y_bin == 1])))
        figs.append(
            plots.plot_roc(
                y_bin,
                test.probs[:, pos],
                out / "roc.png",
                band=band,
                label=f"model ({test.class_names[pos]} vs rest)",
                operating_point=op_xy,
            )
        )
        if points:
            figs.append(
                plots.plot_roc(
                    y_bin,
                    test.probs[:, pos],
                    out / "readers_roc.png",
                    band=band,
                    label="model",
                    reader_points=points,
                    operating_point=op_xy,
                )
            )
    figs.append(
        plots.plot_calibration(y_bin, test.probs[:, pos], out / "calibration.png", n_bins=CALIBRATION_BINS)
    )
    return figs
