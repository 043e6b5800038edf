"""The DICOM node sends the quantitative CT's SEG with its SR to a real Orthanc; the SR references it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from tests.dicomnet.conftest import LISTENER_AET, LOOPBACK, Orthanc, ResultSink, require_program, wait_for

from covidct.io.dicom_write import write_dicom_series
from covidct.service.dicom_node import DicomListener
from covidct.service.predictor import Predictor
from covidct.synthetic import add_lesion, make_phantom

pytestmark = pytest.mark.integration

SHAPE = (40, 160, 160)
SPACING = (2.5, 1.6, 1.6)
RESULT_TIMEOUT_S = 120.0


def test_node_sends_seg_with_the_sr(orthanc: Orthanc, tmp_path: Path, result_sink: ResultSink) -> None:
    phantom = add_lesion(make_phantom("Normal", shape=SHAPE, spacing=SPACING, seed=2), side="right",
                         zone="lower", radius_mm=14.0)
    folder = tmp_path / "series"
    write_dicom_series(phantom.volume, folder, patient_id="SEG-NODE-1")
    study_uid = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID
    listener = DicomListener(LISTENER_AET, orthanc.listener_port, storage_dir=tmp_path / "incoming",
                             analyse=Predictor([]).predict, quiet_seconds=1.0, on_result=result_sink,
                             destination=(LOOPBACK, orthanc.dicom_port, orthanc.aet), host=LOOPBACK).start()
    try:
        sent = subprocess.run([require_program("storescu"), "-aet", "STORESCU", "-aec", LISTENER_AET, "+sd",
                               LOOPBACK, str(listener.port), str(folder)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert sent.returncode == 0, sent.stderr
        assert result_sink.wait(RESULT_TIMEOUT_S), f"no result; node status {listener.status()}"
        modalities = wait_for(lambda: (m := _series_by_modality(orthanc, study_uid)) and
                              {"SEG", "SR"} <= set(m) and m, 60.0)
        assert modalities, f"no SEG and SR in Orthanc: {_series_by_modality(orthanc, study_uid)}"
    finally:
        listener.stop()
    seg = orthanc.download(modalities["SEG"]["Instances"][0])
    sr = orthanc.download(modalities["SR"]["Instances"][0])
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == study_uid
    references = [item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for item in sr.ContentSequence if item.ValueType == "NUM" and "ContentSequence" in item]
    assert references and set(references) == {seg.SOPInstanceUID}
    (series_uid, result), = result_sink.results.items()
    lesion_frames = [g for g in seg.PerFrameFunctionalGroupsSequence
                     if int(g.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 3]
    ggo_slices = (result.lesion_labels == 1).reshape(SHAPE[0], -1).any(axis=1)
    assert len(lesion_frames) == int(np.count_nonzero(ggo_slices)) > 0


def _series_by_modality(orthanc: Orthanc, study_uid: str) -> dict:
    import httpx

    response = httpx.post(f"{orthanc.http_url}/tools/find", timeout=10.0,
                          json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
    response.raise_for_status()
    return {s["MainDicomTags"].get("Modality", "?"): s for s in response.json()}
