"""Combine finished leave-one-source-out runs: the mean P(COVID-19) of several runs, scored per fold.

Each run folder is a `covidct loso` output (CNN or `--scorer`) over the same cohort and groups. For
every fold the runs' prediction CSVs are averaged row by row (same slices required: the test rows are
the held-out group in every run; validation rows match when the runs share the split seed) and scored
with `covidct.training.loso.score_fold`, so the combined row has the same intervals, validation-chosen
aggregation and threshold as a single run. No weight is fitted: the mean is fixed in advance. Also
prints each held-out COVID-CT-MD patient's mean P(COVID-19) (the three shared studies).

    python benchmarks/loso_combine.py runs/e14-focus-256 runs/lesion-logistic --out runs/combined
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from covidct.classes import COVID
from covidct.training.loso import LOSO_JSON, LOSO_MD, loso_table, score_fold

PROB_COLUMN = f"prob_{COVID}"


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _key(row: dict[str, str]) -> tuple[str, str]:
    return row["case_id"], row.get("slice_index", "")


def mean_predictions(paths: list[Path], out: Path) -> Path:
    """Write the row-wise mean of the prediction CSVs ``paths`` (same rows, any order) to ``out``."""
    header, first = _rows(paths[0])
    others = [{_key(r): r for r in _rows(p)[1]} for p in paths[1:]]
    for path, table in zip(paths[1:], others, strict=True):
        if set(table) != {_key(r) for r in first}:
            raise SystemExit(f"{path} holds other slices than {paths[0]}: not the same folds/splits.")
    prob_columns = [c for c in header if c.startswith("prob_")]
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        for row in first:
            merged = dict(row)
            for column in prob_columns:
                values = [float(row[column])] + [float(t[_key(row)][column]) for t in others]
                merged[column] = f"{np.mean(values):.6f}"
            writer.writerow(merged)
    return out


def patient_means(path: Path) -> dict[str, float]:
    """Mean P(COVID-19) per patient of one prediction CSV."""
    per: dict[str, list[float]] = {}
    for row in _rows(path)[1]:
        per.setdefault(row["patient_id"], []).append(float(row[PROB_COLUMN]))
    return {patient: round(float(np.mean(v)), 3) for patient, v in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished `covidct loso` folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for the combined CSVs and table")
    args = parser.parse_args()
    folds = [f for f in json.loads((args.runs[0] / LOSO_JSON).read_text())["folds"]]
    args.out.mkdir(parents=True, exist_ok=True)
    scored = {}
    for fold in folds:
        (args.out / fold).mkdir(exist_ok=True)
        csvs = {
            split: mean_predictions(
                [run / fold / f"predictions_{split}.csv" for run in args.runs],
                args.out / fold / f"predictions_{split}.csv",
            )
            for split in ("val", "test")
        }
        scored[fold] = score_fold(csvs["val"], csvs["test"])
        scored[fold]["held_out"] = fold.split("+")
        if fold == "COVID-CT-MD":
            scored[fold]["patient_mean_p_covid"] = patient_means(csvs["test"])
    (args.out / LOSO_JSON).write_text(
        json.dumps({"combined": [str(r) for r in args.runs], "rule": "mean P", "folds": scored}, indent=2)
    )
    (args.out / LOSO_MD).write_text(loso_table(scored))
    print(loso_table(scored))
    for fold, entry in scored.items():
        auc = entry["auc_slice"]
        print(f"{fold}: slice AUC {auc['estimate']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})"
              + (f"; patients {entry['patient_mean_p_covid']}" if "patient_mean_p_covid" in entry else ""))


if __name__ == "__main__":
    main()
