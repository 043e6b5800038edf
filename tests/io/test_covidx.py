"""COVIDx CT file-name rules, metadata join, cohort summary and `covidct cohort` (synthetic files)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from covidct.cli.main import load_commands
from covidct.io.cohort import read_covidx_split
from covidct.io.cohort_summary import summarize_cohort
from covidct.io.covidx import COVIDX_RULES, parse_covidx_name

# One real-looking file name per source -> (source, patient id as in metadata.csv, slice index).
# Written out by hand (not taken from COVIDX_RULES) so that a broken rule fails here.
NAMES = {
    "NCP_341_1834_0022.png": ("CNCB", "NCP_341", 22),
    "CP_1068_3131_0101.png": ("CNCB", "CP_1068", 101),
    "Normal_2044_120_0005.png": ("CNCB", "Normal_2044", 5),
    "COVIDCTMD-P002-IM0025.png": ("COVID-CT-MD", "COVIDCTMD-P002", 25),
    "COVIDCTMD-cap041-IM0103.png": ("COVID-CT-MD", "COVIDCTMD-cap041", 103),
    "COVIDCTMD-normal076-IM0030.png": ("COVID-CT-MD", "COVIDCTMD-normal076", 30),
    "LIDC-IDRI-0234-1.3.6.1.4.1.14519.5.2.1.6279.6001.189483585244687808087477024767-0019.png": (
        "LIDC-IDRI",
        "LIDC-IDRI-0234",
        19,
    ),
    "volume-covid19-A-0070_ct-0016.png": ("TCIA", "volume-covid19-A-0070", 16),
    "volume-covid19-A-0383_1_ct-0042.png": ("TCIA", "volume-covid19-A-0383_1", 42),
    "coronacases_006-0050.png": ("COVID-19-CT-Seg", "coronacases_006", 50),
    "radiopaedia_29_86491_1-0014.png": ("COVID-19-CT-Seg", "radiopaedia_29_86491", 14),
    "normal1_patient177_SR_2_IM00008.png": ("COVID-CTset", "patient177", 8),
    "normalcd1_patient408_SR_4_IM00031.png": ("COVID-CTset", "patient408", 31),
    "cdnormal4_patient146_SR_2_IM00017.png": ("COVID-CTset", "patient146", 17),
    "137covid_patient76_SR_3_IM00012.png": ("COVID-CTset", "patient76", 12),
    "radiopaedia-11516-8837-0-0031.png": ("radiopaedia.org", "radiopaedia-11516", 31),
    "HUST-Patient10-0042.png": ("iCTCF", "HUST-Patient10", 42),
    "STOIC-1002-0113.png": ("STOIC", "STOIC-1002", 113),
    "study_0255-0021.png": ("MosMedData", "study_0255", 21),
    "A002304-CT-CHEST-WITHOUT-CONTRAST-4-0077.png": ("Stony Brook", "A002304", 77),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_source_rule(name: str) -> None:
    parsed = parse_covidx_name(name)
    assert parsed is not None, name
    assert (parsed.source, parsed.patient_id, parsed.slice_index) == NAMES[name]


def test_rule_table_examples_and_coverage() -> None:
    for rule in COVIDX_RULES:
        parsed = parse_covidx_name(rule.example)
        assert parsed is not None and (parsed.source, parsed.patient_id) == (
            rule.source,
            rule.example_patient,
        )
    assert {rule.source for rule in COVIDX_RULES} == {source for source, _, _ in NAMES.values()}


@pytest.mark.parametrize(
    "name", ["NCP_341_0022.png", "COVIDCTMD-X002-IM0025.png", "patient177_SR_2_IM00008.png", "foo.png"]
)
def test_near_misses_fit_no_rule(name: str) -> None:
    assert parse_covidx_name(name) is None


def _write_split(folder: Path, names: list[str], classes: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "val_COVIDx_CT-3A.txt"
    path.write_text("".join(f"{n} {c} 0 0 10 10\n" for n, c in zip(names, classes, strict=True)))
    return path


def test_unmatched_names_one_warning_with_examples(tmp_path: Path) -> None:
    names = ["NCP_1_2_0001.png", "mystery_a_0001.png", "mystery_a_0002.png", "other-0003.png"]
    split = _write_split(tmp_path, names, [2, 0, 0, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_covidx_split(split, tmp_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "3 of 4 file names fit no known COVIDx CT source" in message
    assert "mystery_a_0001.png -> mystery_a" in message and "COVIDX_RULES" in message
    assert [r.patient_id for r in records] == ["NCP_1", "mystery_a", "mystery_a", "other"]
    assert [r.source for r in records] == ["CNCB", None, None, None]


def test_metadata_join_and_missing_patients(tmp_path: Path) -> None:
    split = _write_split(tmp_path, ["COVIDCTMD-P002-IM0025.png", "Normal_7_1_0002.png"], [2, 0])
    (tmp_path / "metadata.csv").write_text(
        "patient id,source,country,sex,age,finding,verified finding,slice selection,view,modality\n"
        "COVIDCTMD-P002,COVID-CT-MD,Iran,M,54,COVID-19,Yes,Expert,Axial,CT\n"
    )
    with pytest.warns(UserWarning, match="1 patient id.*not in.*e.g. Normal_7"):
        records = read_covidx_split(split, tmp_path)
    assert records[0].meta == {
        "source": "COVID-CT-MD",
        "country": "Iran",
        "sex": "M",
        "age": "54",
        "finding": "COVID-19",
        "verified_finding": "Yes",
        "slice_selection": "Expert",
        "view": "Axial",
        "modality": "CT",
    }
    assert records[1].meta is None


def test_summary_counts_patients_and_missing_files(tmp_path: Path) -> None:
    names = ["NCP_1_10_0001.png", "NCP_1_10_0002.png", "CP_5_3_0007.png", "COVIDCTMD-normal001-IM0001.png"]
    split = _write_split(tmp_path, names, [2, 2, 1, 0])
    images = tmp_path / "images"
    images.mkdir()
    for name in names[1:]:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(images / name)
    summary = summarize_cohort(read_covidx_split(split, images), path=split).to_dict()
    assert (summary["cases"], summary["patients"]) == (4, 3)
    assert summary["by_class"]["COVID-19"] == {"cases": 2, "patients": 1}
    assert summary["by_source"] == {
        "CNCB": {"cases": 3, "patients": 2},
        "COVID-CT-MD": {"cases": 1, "patients": 1},
    }
    assert summary["missing_files"] == 1 and summary["missing_examples"] == [str(images / names[0])]
    assert "--images" in summary["missing_advice"]


def test_cohort_cli(tmp_path: Path) -> None:
    from covidct.cli.app import app

    load_commands()
    split = _write_split(tmp_path, ["NCP_1_10_0001.png", "CP_5_3_0007.png"], [2, 1])
    result = CliRunner().invoke(app, ["cohort", str(split), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["cases"], summary["patients"], summary["missing_files"]) == (2, 2, 2)
    text = CliRunner().invoke(app, ["cohort", str(split), "--images", str(tmp_path / "nowhere")])
    assert text.exit_code == 0 and "missing files: 2" in text.output and "--images DIR" in text.output
    meta = tmp_path / "elsewhere" / "patients.csv"
    meta.parent.mkdir()
    meta.write_text("patient id,source,sex\nNCP_1,CNCB,F\nCP_5,CNCB,M\n")
    joined = CliRunner().invoke(app, ["cohort", str(split), "--metadata", str(meta), "--json"])
    assert json.loads(joined.output)["with_metadata"] == 2
    bad = CliRunner().invoke(app, ["cohort", str(tmp_path / "absent.txt")])
    assert bad.exit_code != 0 and "absent.txt" in bad.output and "Traceback" not in bad.output


def test_summary_of_manifest_and_dicom_class_folders(tmp_path: Path) -> None:
    from .conftest import make_hu, write_series

    root = tmp_path / "study-folders"
    write_series(root / "COVID-19" / "P1", make_hu((2, 8, 8)))
    write_series(root / "COVID-19" / "P2", make_hu((2, 8, 8)))
    write_series(root / "CAP" / "c1", make_hu((2, 8, 8)))
    from covidct.io.cohort import read_cohort

    folders = summarize_cohort(read_cohort(root), path=root).to_dict()
    assert (folders["kind"], folders["cases"], folders["patients"], folders["missing_files"]) == (
        "class-folders",
        3,
        3,
        0,
    )
    assert folders["by_class"] == {
        "COVID-19": {"cases": 2, "patients": 2},
        "Pneumonia": {"cases": 1, "patients": 1},
    }
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,patient_id,split,source\n"
        "study-folders/COVID-19/P1,COVID-19,p1,train,site1\n"
        "study-folders/COVID-19/P1,COVID-19,p1,train,site1\n"
        "gone/scan.nii.gz,Normal,p2,test,site2\n"
    )
    summary = summarize_cohort(read_cohort(manifest), path=manifest).to_dict()
    assert (summary["kind"], summary["cases"], summary["patients"], summary["missing_files"]) == (
        "manifest",
        3,
        2,
        1,
    )
    assert summary["by_split"] == {"test": {"cases": 1, "patients": 1}, "train": {"cases": 2, "patients": 1}}
    assert summary["missing_examples"] == [str(tmp_path / "gone" / "scan.nii.gz")]
    assert "relative paths are resolved against the manifest's folder" in summary["missing_advice"]
