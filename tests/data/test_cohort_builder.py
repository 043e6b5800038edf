"""Multi-source cohort builder: synthetic data roots (rules) and the real ../shared/data (counts)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidct.classes import COVID, NON_COVID
from covidct.data.cohort_builder import build_cohort, cohort_counts, lung_fraction, write_cohort
from covidct.errors import CohortError
from covidct.io import read_manifest, read_volume
from covidct.io.dicom_write import write_dicom_series
from covidct.synthetic import make_phantom

SHAPE = (12, 96, 96)


def _write_ctmd_series(root: Path, class_dir: str, name: str, label: str, infected: set[int]) -> list[str]:
    """A phantom series written with shuffled file names + its slice-label CSV (rows superior -> inferior)."""
    phantom = make_phantom(label, shape=SHAPE, seed=1)
    series = root / "covid-ct-md" / class_dir / name
    write_dicom_series(phantom.volume, series, shuffle_names=True, seed=3)
    files = [Path(f).name for f in read_volume(series).meta.files]  # position order
    with open(root / "covid-ct-md" / class_dir / f"{name}_slice_labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "instance_number", "slice_location", "infection"])
        for i, f in enumerate(files):
            writer.writerow([f, i + 1, -float(i), int(i in infected)])
    return files


def _write_images(folder: Path, n: int, value: int = 200) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((64, 64), np.uint8)
        img[8:56, 8:56] = value
        img[16:48, 14:30] = 40  # an enclosed dark 'lung'
        img[16:48, 34:50] = 40
        Image.fromarray(img).save(folder / f"img{i}.png")


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _write_images(root / "ucsd-covid-ct" / "CT_COVID", 3)
    _write_images(root / "ucsd-covid-ct" / "CT_NonCOVID", 2)
    _write_ctmd_series(root, "COVID-19", "P001", "COVID-19", {3, 4, 5})
    _write_ctmd_series(root, "CAP", "cap001", "Pneumonia", {7})
    _write_images(root / "ieee8023-ct" / "COVID-19", 2)
    (root / "ieee8023-ct" / "metadata.csv").write_text(
        "patientid,finding,filename\n17,COVID-19,img0.png\n17,COVID-19,img1.png\n"
    )
    return root


def test_synthetic_root_rules_labels_and_patients(fake_root: Path) -> None:
    rows = build_cohort(fake_root)
    counts = cohort_counts(rows)
    assert counts["UCSD"] == {NON_COVID: 2, COVID: 3, "patients": 5}
    assert counts["COVID-CT-MD"] == {NON_COVID: 1, COVID: 3, "patients": 2}
    assert counts["ieee8023"] == {NON_COVID: 0, COVID: 2, "patients": 1}
    ctmd = {(r.finding, r.slice_index) for r in rows if r.source == "COVID-CT-MD"}
    # the labelled slices by position, whatever the (shuffled) file names are
    assert ctmd == {("COVID-19", 3), ("COVID-19", 4), ("COVID-19", 5), ("CAP", 7)}
    assert all(r.label == NON_COVID for r in rows if r.finding == "CAP")


def test_manifest_round_trip_keeps_slices_and_sources(fake_root: Path, tmp_path: Path) -> None:
    rows = build_cohort(fake_root)
    records = read_manifest(write_cohort(rows, tmp_path / "sub" / "cohort.csv"))
    assert [(r.source, r.slice_index, r.label, r.patient_id) for r in records] == [
        (r.source, r.slice_index, r.label, r.patient_id) for r in rows
    ]
    assert all(r.path.exists() for r in records)


def test_missing_slice_labels_and_unknown_source_are_errors(fake_root: Path, tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="valid: UCSD"):
        build_cohort(fake_root, sources=["UCDS"])
    root = tmp_path / "r"
    write_dicom_series(make_phantom("Normal", shape=SHAPE).volume, root / "covid-ct-md" / "Normal" / "n1")
    with pytest.raises(CohortError, match="n1_slice_labels.csv"):
        build_cohort(root)


def test_lung_fraction_counts_enclosed_air_only() -> None:
    body = np.zeros((100, 100), np.float32)
    body[10:90, 10:90] = 220.0
    assert lung_fraction(body) == 0.0  # outside air is not lung
    body[30:70, 20:45] = 30.0
    assert lung_fraction(body) == pytest.approx(0.1, abs=0.02)


@pytest.mark.realdata
def test_real_cohort_counts_per_source(shared_data: Path) -> None:
    counts = cohort_counts(build_cohort(shared_data))
    assert counts == {
        "UCSD": {NON_COVID: 397, COVID: 349, "patients": 746},
        "COVID-CT-MD": {NON_COVID: 132, COVID: 80, "patients": 3},  # 30 CAP + 102 normal lung slices
        "Inf-Net": {NON_COVID: 0, COVID: 98, "patients": 98},
        "LIDC-IDRI": {NON_COVID: 39, COVID: 0, "patients": 3},
        "ieee8023": {NON_COVID: 0, COVID: 57, "patients": 23},
        "Kaggle": {NON_COVID: 64, COVID: 0, "patients": 64},  # 66 minus the pelvis and one border-cut slice
    }
