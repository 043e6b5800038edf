"""The quantitative CT's masks as a product: `covidct predict` writes NIfTI + SEG beside the report, the
API serves the SEG, the SR's measurements reference it; SEG and SR pass dciodvfy."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from tests.service.conftest import make_token, wait_done, zip_bytes
from typer.testing import CliRunner

from covidct.io.dicom_write import write_dicom_series
from covidct.io.masks import read_segmentation_labels
from covidct.io.nifti import RAS_TO_LPS
from covidct.service.predictor import Predictor
from covidct.synthetic import add_lesion, make_phantom

SHAPE = (48, 192, 192)
SPACING = (2.5, 1.5, 1.5)
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def left_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DICOM series (stored bottom-to-top: InstanceNumber 1 is the lowest slice) of a phantom with one
    ground-glass lesion in the left lower zone."""
    normal = make_phantom("Normal", shape=SHAPE, spacing=SPACING, seed=0)
    phantom = add_lesion(normal, side="left", zone="lower", radius_mm=14.0)
    volume = phantom.volume
    flipped = type(volume)(np.ascontiguousarray(volume.array[::-1]), volume.spacing,
                           origin=(0.0, 0.0, -float(SHAPE[0] - 1) * SPACING[0]), direction=np.eye(3),
                           meta=volume.meta)
    out = tmp_path_factory.mktemp("masks") / "series"
    write_dicom_series(flipped, out)
    return out


@pytest.fixture(scope="module")
def result(left_study: Path):
    return Predictor([]).predict(left_study)


def _lps_centroid(path: Path, value: int) -> np.ndarray:
    img = nib.load(str(path))
    ijk = np.argwhere(np.asarray(img.dataobj) == value).mean(axis=0)
    return (RAS_TO_LPS @ img.affine @ np.append(ijk, 1.0))[:3]


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_cli_predict_writes_masks_beside_the_report(left_study: Path, result, tmp_path: Path) -> None:
    from covidct.cli.main import app, load_commands

    load_commands()
    res = CliRunner().invoke(app, ["predict", str(left_study), "--out", str(tmp_path / "reports")])
    assert res.exit_code == 0, res.output
    line = json.loads(res.output.strip().splitlines()[-1])
    folder = Path(line["json"]).parent
    for key, name in (("lung_nifti", "lungs.nii.gz"), ("lesion_nifti", "lesions.nii.gz"),
                      ("seg", "segmentation.dcm")):
        assert Path(line[key]) == folder / name and (folder / name).is_file()
    report = json.loads(Path(line["json"]).read_text())
    masks = report["masks"]
    assert masks["seg"] == "segmentation.dcm" and masks["lesion_nifti"] == "lesions.nii.gz"
    lesions = np.transpose(np.asarray(nib.load(str(folder / "lesions.nii.gz")).dataobj), (2, 1, 0))
    lungs = np.transpose(np.asarray(nib.load(str(folder / "lungs.nii.gz")).dataobj), (2, 1, 0))
    np.testing.assert_array_equal(lesions, result.lesion_labels)
    np.testing.assert_array_equal(lungs, result.lung_labels)
    uids = result.volume.meta.sop_uids
    seg_lungs, seg_lesions = read_segmentation_labels(folder / "segmentation.dcm", uids)
    np.testing.assert_array_equal(seg_lungs, lungs)
    np.testing.assert_array_equal(seg_lesions, lesions)
    # the lesion is in the patient's left lung (LPS +x), lower zone (lower z than the lung centre)
    lesion_at = _lps_centroid(folder / "lesions.nii.gz", 1)
    lung_at = _lps_centroid(folder / "lungs.nii.gz", 2)
    right_lung_at = _lps_centroid(folder / "lungs.nii.gz", 1)
    assert lung_at[0] > right_lung_at[0]  # label 2 (left lung) lies on the patient's left
    assert lesion_at[0] > (lung_at[0] + right_lung_at[0]) / 2
    assert lesion_at[2] < lung_at[2]


def test_nifti_input_gets_nifti_masks_without_seg(result, tmp_path: Path) -> None:
    from covidct.io import write_nifti
    from covidct.service.report import write_study_outputs

    nifti = write_nifti(result.volume, tmp_path / "scan.nii.gz")
    from_nifti = Predictor([]).predict(nifti)
    written = write_study_outputs(from_nifti, tmp_path / "out")
    assert "seg" not in written and written["lesion_nifti"].is_file()
    assert "not a DICOM series" in from_nifti.masks["seg_note"]
    np.testing.assert_allclose(nib.load(str(written["lesion_nifti"])).affine, nib.load(str(nifti)).affine)


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_sr_measurements_reference_the_seg_and_both_pass_dciodvfy(left_study: Path, result,
                                                                   tmp_path: Path) -> None:
    from covidct.service.dicom_export import build_structured_report
    from covidct.service.masks import SEGMENT_NUMBERS, study_segmentation

    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(left_study.iterdir())]
    seg = study_segmentation(result, sources)
    sr = build_structured_report(sources, result, segmentation=seg)
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert _dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert _dciodvfy_errors(tmp_path / "sr.dcm") == []
    items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in sr.ContentSequence}
    for name, labels in (("left lung volume", ["left lung"]),
                         ("ground-glass volume", ["ground-glass opacity"]),
                         ("total lung involvement", ["right lung", "left lung", "ground-glass opacity",
                                                     "consolidation"])):
        ref = items[name].ContentSequence[0]
        assert ref.RelationshipType == "INFERRED FROM" and ref.ValueType == "IMAGE"
        assert ref.ConceptNameCodeSequence[0].CodeValue == "121191"  # Referenced Segment
        sop = ref.ReferencedSOPSequence[0]
        assert sop.ReferencedSOPClassUID == SEG_SOP_CLASS
        assert sop.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        numbers = sop.ReferencedSegmentNumber
        many = isinstance(numbers, pydicom.multival.MultiValue)
        numbers = [int(n) for n in (numbers if many else [numbers])]
        assert numbers == [SEGMENT_NUMBERS[label] for label in labels]
    evidence = {item.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in evidence


def test_api_serves_the_seg(left_study: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from covidct.service.api import ServiceSettings, create_app

    db = tmp_path / "api.db"
    token = make_token(db, "test")
    settings = ServiceSettings(checkpoints=[], db=str(db), data_dir=str(tmp_path / "data"), workers=1)
    upload = zip_bytes(left_study)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/studies", files=[("files", ("study.zip", upload, "application/zip"))],
                           headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        assert client.get(f"/studies/{job_id}/segmentation.dcm").status_code == 401  # no token
        client.headers["Authorization"] = f"Bearer {token}"
        job = wait_done(client, job_id)
        assert job["status"] == "done", job
        assert job["result"]["masks"]["seg"] == "segmentation.dcm"
        got = client.get(f"/studies/{job_id}/segmentation.dcm")
        assert got.status_code == 200 and got.headers["content-type"] == "application/dicom"
        seg = pydicom.dcmread(io.BytesIO(got.content))
        assert seg.SOPClassUID == SEG_SOP_CLASS and seg.Modality == "SEG"
        uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in left_study.iterdir()}
        referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                      for i in s.ReferencedInstanceSequence}
        assert referenced <= uids and referenced
        assert client.get("/studies/unknown/segmentation.dcm").status_code == 404


def test_a_series_with_a_gap_gets_no_masks_and_says_why(left_study: Path, tmp_path: Path) -> None:
    from covidct.service.report import write_study_outputs

    folder = tmp_path / "gap"
    shutil.copytree(left_study, folder)
    by_number = {int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber): p for p in folder.iterdir()}
    by_number[SHAPE[0] // 2].unlink()
    gapped = Predictor([]).predict(folder)
    written = write_study_outputs(gapped, tmp_path / "out")
    assert not {"lung_nifti", "lesion_nifti", "seg"} & set(written)
    out = tmp_path / "out"
    assert not list(out.glob("*.nii.gz")) and not (out / "segmentation.dcm").exists()
    report = json.loads(written["json"].read_text())
    assert report["masks"] is None
    assert any(w.startswith("no masks written") and "regular grid" in w for w in report["warnings"])


def test_key_images_are_named_by_the_pacs_image_number(left_study: Path, result) -> None:
    from covidct.service.dicom_export import build_key_images

    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(left_study.iterdir())]
    numbers = result.slice_numbers["numbers"]
    for k, sc in zip(result.key_slices, build_key_images(sources, result), strict=True):
        assert f"image {numbers[k]} (InstanceNumber)" in sc.DerivationDescription
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == result.volume.meta.sop_uids[k]
