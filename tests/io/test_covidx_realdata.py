"""The released COVIDx CT split files (../shared/data/covidx-ct-splits) read as the dataset documents them."""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from covidct.evaluation.predictions import aggregate_patients, read_predictions
from covidct.io.cohort import read_covidx_split
from covidct.io.cohort_summary import summarize_cohort
from covidct.io.covidx import read_covidx_metadata
from covidct.training.engine import write_predictions
from covidct.training.splits import check_no_leakage, split_by_patient

pytestmark = pytest.mark.realdata

# From the dataset's own documentation (covidx-ct-splits/dataset.md and the COVID-Net CT-2 paper).
PUBLISHED = {
    "test_COVIDx_CT-3A.txt": (33_781, 503, {"Normal": 164, "Pneumonia": 138, "COVID-19": 201}),
    "val_COVIDx_CT-3A.txt": (33_725, 560, {"Normal": 164, "Pneumonia": 202, "COVID-19": 194}),
    "test_COVIDx_CT-2A.txt": (25_658, 426, None),
}


@pytest.fixture(scope="module")
def splits_dir(shared_data: Path) -> Path:
    folder = shared_data / "covidx-ct-splits"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unmatched names, no patient missing from metadata.csv
        return read_covidx_split(path, path.parent / "images")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_patient_counts(splits_dir: Path, name: str) -> None:
    slices, patients, per_class = PUBLISHED[name]
    records = _read(splits_dir / name)
    summary = summarize_cohort(records, path=splits_dir / name, check_files=False)
    assert (summary.cases, summary.patients) == (slices, patients)
    if per_class is not None:
        assert {c: g.patients for c, g in summary.by_class.items()} == per_class
    assert summary.patients_with_two_classes == []
    metadata = read_covidx_metadata(splits_dir / "metadata.csv")
    assert {r.patient_id for r in records} <= set(metadata)
    assert all(r.meta is not None and r.meta["source"] == r.source for r in records)


def test_val_and_test_share_no_patient_and_split_by_patient(splits_dir: Path) -> None:
    val = _read(splits_dir / "val_COVIDx_CT-3A.txt")
    test = _read(splits_dir / "test_COVIDx_CT-3A.txt")
    check_no_leakage(val + test)
    resplit = split_by_patient([dataclasses.replace(r, split=None) for r in val], seed=0)
    splits_of = defaultdict(set)
    for record in resplit:
        splits_of[record.patient_id].add(record.split)
    assert len(splits_of) == 560 and all(len(s) == 1 for s in splits_of.values())


class _Slices:
    """The two methods `write_predictions` needs of a dataset."""

    def __init__(self, records):
        self.records = records

    def record(self, index):
        return self.records[index]

    def slice_index(self, index):
        return self.records[index].slice_index


def test_predictions_aggregate_to_published_patients(splits_dir: Path, tmp_path: Path) -> None:
    records = _read(splits_dir / "test_COVIDx_CT-3A.txt")
    classes = ("Normal", "Pneumonia", "COVID-19")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=len(records))
    csv = write_predictions(tmp_path / "p.csv", _Slices(records), range(len(records)), probs, classes)
    patients = aggregate_patients(read_predictions(csv))
    assert len(patients) == 503
    labels, counts = np.unique(np.asarray(patients.class_names)[patients.y_true], return_counts=True)
    assert dict(zip(labels.tolist(), counts.tolist(), strict=True)) == {
        "Normal": 164,
        "Pneumonia": 138,
        "COVID-19": 201,
    }
