"""The SR and Secondary Capture builders on real headers (synthetic and COVID-CT-MD P001)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from tests.dicomnet.conftest import write_synthetic_series

from covidct import RESEARCH_USE_STATEMENT
from covidct.errors import ServiceError
from covidct.service.dicom_export import (
    build_key_images,
    build_secondary_capture,
    build_structured_report,
    export_result,
)

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
RESULT = {"predicted_class": "COVID-19", "probabilities": {"Normal": 0.1, "Pneumonia": 0.2, "COVID-19": 0.7},
          "model_name": "covidnet-ct2-s", "model_version": "0.1.0+abc"}


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def _flatten(items: pydicom.Sequence) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CODE":
            out[meaning] = item.ConceptCodeSequence[0].CodeMeaning
        elif item.ValueType == "NUM":
            out[meaning] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT":
            out[meaning] = item.TextValue
    return out


def test_sr_holds_finding_probabilities_model_and_statement(tmp_path: Path) -> None:
    study, _ = write_synthetic_series(tmp_path / "s")
    headers = _headers(tmp_path / "s")
    sr = _roundtrip(build_structured_report(headers, RESULT))
    assert sr.SOPClassUID == COMPREHENSIVE_SR_STORAGE
    assert sr.StudyInstanceUID == study
    assert sr.SeriesInstanceUID != headers[0].SeriesInstanceUID
    assert (sr.PatientID, str(sr.PatientName)) == ("PHANTOM-1", "Phantom^Test")
    content = _flatten(sr.ContentSequence)
    assert content["Finding"] == "COVID-19"
    assert content["Probability of COVID-19"] == pytest.approx(0.7)
    assert content["Probability of Normal"] == pytest.approx(0.1)
    assert content["Algorithm Name"] == "covidnet-ct2-s"
    assert content["Algorithm Version"] == "0.1.0+abc"
    assert content["Comment"] == RESEARCH_USE_STATEMENT
    referenced = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(referenced.ReferencedSOPSequence) == len(headers)


def test_secondary_capture_is_rgb_in_the_source_study(tmp_path: Path) -> None:
    study, _ = write_synthetic_series(tmp_path / "s")
    headers = _headers(tmp_path / "s")
    rgb = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    series_uid = pydicom.uid.generate_uid()
    sc = _roundtrip(build_secondary_capture(headers[3], rgb, series_uid, 2, "key slice 3"))
    assert (sc.SOPClassUID, sc.StudyInstanceUID, sc.SeriesInstanceUID) == (SC_STORAGE, study, series_uid)
    assert sc.PhotometricInterpretation == "RGB" and sc.InstanceNumber == 2
    np.testing.assert_array_equal(sc.pixel_array, rgb)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == headers[3].SOPInstanceUID
    assert RESEARCH_USE_STATEMENT in sc.ImageComments


def test_predictor_style_overlays_become_key_images(tmp_path: Path) -> None:
    from PIL import Image

    write_synthetic_series(tmp_path / "s")
    headers = _headers(tmp_path / "s")
    png = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(png, format="PNG")
    result = {**RESULT, "overlays": {0: png.getvalue()}}
    (sc,) = build_key_images(headers, result)
    ordered_first = max(headers, key=lambda d: float(d.ImagePositionPatient[2]))
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == ordered_first.SOPInstanceUID
    assert sc.pixel_array.shape == (16, 16, 3)


@pytest.mark.realdata
def test_sr_for_p001_keeps_study_and_patient(shared_data: Path) -> None:
    folder = shared_data / "covid-ct-md" / "COVID-19" / "P001"
    headers = _headers(folder)
    sr = _roundtrip(build_structured_report(headers, RESULT))
    assert sr.StudyInstanceUID == headers[0].StudyInstanceUID
    assert sr.PatientID == headers[0].PatientID and sr.PatientAge == headers[0].PatientAge


def test_incomplete_result_is_a_clear_error() -> None:
    with pytest.raises(ServiceError, match="lacks model_name, model_version"):
        export_result({"predicted_class": "Normal", "probabilities": {"Normal": 1.0}})
    with pytest.raises(ServiceError, match="uint8"):
        export_result({**RESULT, "key_images": [(0, np.zeros((4, 4, 3), np.float32))]})
