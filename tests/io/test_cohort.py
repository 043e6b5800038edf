"""Cohort readers: manifest CSV, COVIDx split files, class folders, leakage check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidct.errors import CohortError, DataLeakageError, UnknownClassError
from covidct.io import (
    CaseRecord,
    check_no_patient_leakage,
    read_class_folders,
    read_cohort,
    read_covidx_split,
    read_manifest,
)
from covidct.io.cohort import covidx_patient_id

from .conftest import make_hu, write_series


def test_manifest(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(
        "path,label,patient_id,split,source\nscans/a.nii.gz,CAP,p1,train,site1\n/abs/b,covid,p2,test,\n"
    )
    recs = read_cohort(csv)
    assert recs[0] == CaseRecord("p1/a", tmp_path / "scans/a.nii.gz", "Pneumonia", "p1", "train", "site1")
    assert recs[1].path == Path("/abs/b") and recs[1].label == "COVID-19" and recs[1].source is None


def test_manifest_errors_have_line_numbers(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\na,Normal\n")
    with pytest.raises(CohortError, match="line 1: missing column.*patient_id"):
        read_manifest(csv)
    csv.write_text("path,label,patient_id\na,Normal,p1\nb,flu,p2\n")
    with pytest.raises(UnknownClassError, match="line 3.*'flu'"):
        read_manifest(csv)
    csv.write_text("path,label,patient_id\na,Normal,\n")
    with pytest.raises(CohortError, match="line 2: empty patient_id"):
        read_manifest(csv)


def test_covidx_split(tmp_path: Path) -> None:
    txt = tmp_path / "test_COVIDx_CT-3A.txt"
    txt.write_text(
        "NCP_96_1328_0032.png 2 9 94 512 405\n"
        "CP_1_3145_0010.png 1 0 10 500 400\n"
        "Normal_2_44_0005.png 0 1 2 3 4\n"
        "COVIDCTMD-normal001-IM0030.png 0 10 20 30 40\n"
        "radiopaedia_org_covid-19-pneumonia-7_85703_0-dcm_12.png 2 5 6 7 8\n"
    )
    with pytest.warns(UserWarning, match="1 of 5 file names fit no known COVIDx CT source"):
        recs = read_covidx_split(txt, tmp_path / "images")
    assert [r.label for r in recs] == ["COVID-19", "Pneumonia", "Normal", "Normal", "COVID-19"]
    assert recs[0].box == (9, 94, 512, 405) and recs[0].path == tmp_path / "images" / "NCP_96_1328_0032.png"
    assert [r.patient_id for r in recs[:4]] == ["NCP_96", "CP_1", "Normal_2", "COVIDCTMD-normal001"]
    assert [r.source for r in recs] == ["CNCB", "CNCB", "CNCB", "COVID-CT-MD", None]
    assert recs[0].split == "test" and recs[0].slice_index == 32
    assert recs[4].patient_id == "radiopaedia_org_covid-19-pneumonia-7_85703_0-dcm"
    assert covidx_patient_id("LIDC-IDRI-0001-1.3.6.1.4-0042.png") == "LIDC-IDRI-0001"


def test_covidx_bad_lines(tmp_path: Path) -> None:
    txt = tmp_path / "train.txt"
    txt.write_text("a.png 2 0 0 10 10\nb.png 3 0 0 10 10\n")
    with pytest.raises(UnknownClassError, match="line 2: class '3'"):
        read_covidx_split(txt, tmp_path)
    txt.write_text("a.png 2 0 0 10\n")
    with pytest.raises(CohortError, match="line 1: expected 6 fields"):
        read_covidx_split(txt, tmp_path)
    txt.write_text("a.png 2 10 0 10 10\n")
    with pytest.raises(CohortError, match="empty box"):
        read_covidx_split(txt, tmp_path)


def test_class_folders_images_and_dicom(tmp_path: Path) -> None:
    for cls, n in (("CT_COVID", 2), ("CT_NonCOVID", 3)):
        (tmp_path / cls).mkdir()
        for k in range(n):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / cls / f"{k}%{k}.png")
    with pytest.warns(UserWarning, match="no patient ids"):
        recs = read_cohort(tmp_path)
    assert len(recs) == 5 and {r.label for r in recs} == {"COVID-19", "Non-COVID"}
    assert recs[0].patient_id == "0%0" and recs[0].source == "UCSD"
    root = tmp_path / "mosmed"
    write_series(root / "COVID-19" / "P1", make_hu((2, 8, 8)))
    write_series(root / "CAP" / "c1", make_hu((2, 8, 8)))
    recs = read_class_folders(root)
    assert {(r.case_id, r.label, r.patient_id) for r in recs} == {
        ("COVID-19/P1", "COVID-19", "P1"),
        ("CAP/c1", "Pneumonia", "c1"),
    }


def test_leakage() -> None:
    recs = [
        CaseRecord("a", Path("a"), "Normal", "p1", "train"),
        CaseRecord("b", Path("b"), "Normal", "p1", "test"),
        CaseRecord("c", Path("c"), "Normal", "p2", "train"),
        CaseRecord("d", Path("d"), "Normal", "p3"),
    ]
    with pytest.raises(DataLeakageError, match="1 patient.*p1: test, train"):
        check_no_patient_leakage(recs)
    check_no_patient_leakage(recs[2:])
