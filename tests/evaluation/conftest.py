"""Synthetic predictions and reads for the evaluation tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from covidct.classes import CLASSES_3
from covidct.evaluation.predictions import PredictionTable, write_predictions

SIGNAL = 1.5


def synthetic_table(
    n_patients: int = 60,
    slices: int = 1,
    *,
    seed: int = 0,
    signal: float = SIGNAL,
    split_fraction: float = 0.0,
) -> PredictionTable:
    """Softmax predictions, true-class logit raised by ``signal``; ``slices`` rows per patient."""
    rng = np.random.default_rng(seed)
    y_patient = rng.integers(0, 3, n_patients)
    y_patient[:3] = [0, 1, 2]
    pid = np.repeat(np.array([f"P{i:04d}" for i in range(n_patients)]), slices)
    y = np.repeat(y_patient, slices)
    logits = rng.normal(size=(y.size, 3))
    logits[np.arange(y.size), y] += signal
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    case = np.array([f"{p}_s{i % slices}" for i, p in enumerate(pid)]) if slices > 1 else pid.copy()
    split = None
    if split_fraction:
        tune_patients = rng.random(n_patients) < split_fraction
        split = np.where(np.repeat(tune_patients, slices), "val", "test")
    return PredictionTable(
        case_id=case, patient_id=pid, y_true=y, probs=probs, class_names=CLASSES_3, split=split
    )


@pytest.fixture
def table() -> PredictionTable:
    return synthetic_table()


@pytest.fixture
def predictions_csv(tmp_path: Path) -> Path:
    return write_predictions(synthetic_table(80, slices=4, split_fraction=0.4), tmp_path / "preds.csv")


def write_reads(path: Path, table: PredictionTable, *, readers=("R1", "R2", "R3"), seed: int = 0) -> Path:
    """Readers who call COVID-19 correctly 80% of the time without AI and 88% with AI."""
    rng = np.random.default_rng(seed)
    patients, first = np.unique(table.patient_id, return_index=True)
    truth = table.y_true[first]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["reader", "case_id", "call", "with_ai", "confidence"])
        for reader in readers:
            for with_ai, p_correct in ((False, 0.80), (True, 0.88)):
                correct = rng.random(patients.size) < p_correct
                calls = np.where(correct, truth, (truth + rng.integers(1, 3, patients.size)) % 3)
                for pid, c in zip(patients, calls, strict=True):
                    writer.writerow([reader, pid, CLASSES_3[c], int(with_ai), f"{rng.random():.2f}"])
    return path
