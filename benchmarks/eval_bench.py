"""Benchmark: 10,000 patient-level bootstrap replicates of every metric, vectorised vs a scikit-learn loop.

Synthetic predictions: 25,658 slices from 400 patients (1 + multinomial slices each), 3 classes; softmax of
a per-patient random logit offset + per-slice noise + a boost of the true class. Two settings:
  1. patient level: slices aggregated (mean) to 400 patient rows, patients resampled;
  2. slice level: the 25,658 slice rows scored, resampled by patient (all slices of a drawn patient).
The plain loop (scikit-learn calls per replicate) is timed on LOOP_REPLICATES replicates and
extrapolated linearly to N_BOOT. Run: ``.venv/bin/python benchmarks/eval_bench.py``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from covidct.classes import CLASSES_3
from covidct.evaluation import aggregate_patients, bootstrap_metrics
from covidct.evaluation.intervals import bootstrap_indices
from covidct.evaluation.predictions import PredictionTable

N_SLICES = 25_658
N_PATIENTS = 400
N_BOOT = 10_000
LOOP_REPLICATES = 200
SEED = 0
PATIENT_EFFECT_SD = 1.0
TRUE_CLASS_BOOST = 1.0
OUT = Path(__file__).parent / "out" / "eval_bench.json"


def synthetic_slices() -> PredictionTable:
    rng = np.random.default_rng(SEED)
    sizes = rng.multinomial(N_SLICES - N_PATIENTS, np.ones(N_PATIENTS) / N_PATIENTS) + 1
    pid = np.repeat(np.arange(N_PATIENTS), sizes)
    y = np.repeat(rng.integers(0, 3, N_PATIENTS), sizes)
    patient_effect = rng.normal(0.0, PATIENT_EFFECT_SD, size=(N_PATIENTS, 3))  # slices of a patient correlate
    logits = patient_effect[pid] + rng.normal(size=(N_SLICES, 3))
    logits[np.arange(N_SLICES), y] += TRUE_CLASS_BOOST
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = np.array([f"P{p:04d}" for p in pid])
    return PredictionTable(
        case_id=np.arange(N_SLICES).astype(str), patient_id=ids, y_true=y, probs=probs, class_names=CLASSES_3
    )


def sklearn_all_metrics(y: np.ndarray, probs: np.ndarray) -> dict:
    """Every metric of the vectorised bootstrap, computed with scikit-learn calls."""
    pred = probs.argmax(1)
    cm = skm.confusion_matrix(y, pred, labels=[0, 1, 2])
    tn = cm.sum() - cm.sum(0) - cm.sum(1) + np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = tn / (tn + cm.sum(0) - np.diag(cm))
        npv = tn / (tn + cm.sum(1) - np.diag(cm))
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "kappa": skm.cohen_kappa_score(y, pred),
        "sens": skm.recall_score(y, pred, labels=[0, 1, 2], average=None, zero_division=np.nan),
        "ppv": skm.precision_score(y, pred, labels=[0, 1, 2], average=None, zero_division=np.nan),
        "f1": skm.f1_score(y, pred, labels=[0, 1, 2], average=None, zero_division=np.nan),
        "spec": spec,
        "npv": npv,
        "brier": np.mean(np.sum((probs - np.eye(3)[y]) ** 2, 1)),
    }
    out["auc"] = [
        skm.roc_auc_score(y == k, probs[:, k]) if 0 < np.sum(y == k) < y.size else np.nan for k in range(3)
    ]
    return out


def time_loop(y, probs, rows_of_patient, n_patients: int) -> float:
    draws = bootstrap_indices(n_patients, LOOP_REPLICATES, SEED)
    t0 = time.perf_counter()
    for d in draws:
        rows = np.concatenate([rows_of_patient[p] for p in d])
        sklearn_all_metrics(y[rows], probs[rows])
    return time.perf_counter() - t0


def time_vectorised(y, pred, probs, groups, method: str = "percentile") -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = bootstrap_metrics(
        y, pred, probs, groups=groups, n_boot=N_BOOT, random_state=SEED, method=method, class_names=CLASSES_3
    )
    return time.perf_counter() - t0, res


def main() -> dict:
    table = synthetic_slices()
    patients = aggregate_patients(table, "mean")
    results: dict = {
        "n_slices": N_SLICES,
        "n_patients": N_PATIENTS,
        "n_boot": N_BOOT,
        "classes": 3,
        "loop_replicates_timed": LOOP_REPLICATES,
        "python": platform.python_version(),
        "metrics_per_replicate": None,
    }
    # patient level
    t_vec, res = time_vectorised(patients.y_true, patients.y_pred, patients.probs, None)
    t_bca, _ = time_vectorised(patients.y_true, patients.y_pred, patients.probs, None, method="bca")
    rows = [np.array([i]) for i in range(N_PATIENTS)]
    t_loop = time_loop(patients.y_true, patients.probs, rows, N_PATIENTS)
    results["metrics_per_replicate"] = len(res)
    results["patient_level"] = {
        "vectorised_s": t_vec,
        "vectorised_bca_s": t_bca,
        "sklearn_loop_s_measured": t_loop,
        "sklearn_loop_s_extrapolated": t_loop * N_BOOT / LOOP_REPLICATES,
        "accuracy": res["accuracy"].to_dict(),
        "auc_macro": res["auc_macro"].to_dict(),
    }
    # slice level, resampled by patient
    _, inv = np.unique(table.patient_id, return_inverse=True)
    t_vec_s, res_s = time_vectorised(table.y_true, table.y_pred, table.probs, table.patient_id)
    rows = [np.flatnonzero(inv == p) for p in range(N_PATIENTS)]
    t_loop_s = time_loop(table.y_true, table.probs, rows, N_PATIENTS)
    results["slice_level_by_patient"] = {
        "vectorised_s": t_vec_s,
        "sklearn_loop_s_measured": t_loop_s,
        "sklearn_loop_s_extrapolated": t_loop_s * N_BOOT / LOOP_REPLICATES,
        "accuracy": res_s["accuracy"].to_dict(),
        "auc_macro": res_s["auc_macro"].to_dict(),
    }
    for key in ("patient_level", "slice_level_by_patient"):
        r = results[key]
        r["speedup"] = r["sklearn_loop_s_extrapolated"] / r["vectorised_s"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
