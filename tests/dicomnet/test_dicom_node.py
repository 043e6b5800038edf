"""The DICOM node against real peers: DCMTK storescu/echoscu send, a real Orthanc receives the SR/SC.

The analysis is `hu_rule_analysis` (conftest): a real but model-free computation on the received
series (ground-glass fraction of lung-range HU), so these tests need no trained model.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    generate_uid,
)
from tests.dicomnet.conftest import (
    LISTENER_AET,
    LOOPBACK,
    Orthanc,
    ResultSink,
    free_port,
    hu_rule_analysis,
    require_program,
    wait_for,
)

from covidct import RESEARCH_USE_STATEMENT
from covidct.service.dicom_node import STATUS_CANNOT_UNDERSTAND, DicomListener

QUIET_S = 1.0
SEND_TIMEOUT_S = 120
RESULT_TIMEOUT_S = 120.0
SR_MODALITY = "SR"
SEG_MODALITY = "SEG"
SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
P001 = ("covid-ct-md", "COVID-19", "P001")
P001_SLICES = 148
TRUNCATE_BYTES = 2000

pytestmark = pytest.mark.integration

MakeListener = Callable[..., DicomListener]


@pytest.fixture
def make_listener(tmp_path: Path, result_sink: ResultSink) -> Iterator[MakeListener]:
    """Start DicomListeners on loopback (stopped at teardown)."""
    started: list[DicomListener] = []

    def make(port: int | None = None, destination: tuple[str, int, str] | None = None,
             on_result: Callable[[str, Any], None] | None = None, quiet: float = QUIET_S,
             store: Any = None) -> DicomListener:
        listener = DicomListener(LISTENER_AET, free_port() if port is None else port,
                                 storage_dir=tmp_path / "incoming", analyse=hu_rule_analysis,
                                 quiet_seconds=quiet, destination=destination,
                                 on_result=on_result or result_sink, host=LOOPBACK, store=store)
        started.append(listener.start())
        return listener

    yield make
    for listener in started:
        listener.stop()


def storescu(folder: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu: every *.dcm file of ``folder`` to the listener."""
    binary = require_program("storescu")
    command = [binary, "-aet", "STORESCU", "-aec", LISTENER_AET, *extra, "+sd", "+sp", "*.dcm",
               LOOPBACK, str(port), str(folder)]
    return subprocess.run(command, capture_output=True, text=True, timeout=SEND_TIMEOUT_S, check=False)


def result_series(orthanc: Orthanc, study_uid: str) -> dict[str, dict[str, Any]]:
    """Orthanc's series of a study by Modality (REST /tools/find + /series)."""
    import httpx

    response = httpx.post(f"{orthanc.http_url}/tools/find", timeout=10.0,
                          json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
    response.raise_for_status()
    return {s["MainDicomTags"].get("Modality", "?"): s for s in response.json()}


def check_results_in_orthanc(orthanc: Orthanc, study_uid: str) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    """The SR and the first Secondary Capture, downloaded from Orthanc and parsed with pydicom."""
    def secondary_captures(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [s for m, s in found.items() if m not in (SR_MODALITY, SEG_MODALITY)]

    series = wait_for(lambda: (s := result_series(orthanc, study_uid)) and SR_MODALITY in s
                      and secondary_captures(s) and s, 30.0)
    assert series and SR_MODALITY in series, f"no SR series in Orthanc for {study_uid}: {list(series or {})}"
    sr = orthanc.download(series[SR_MODALITY]["Instances"][0])
    sc_series = secondary_captures(series)  # the SEG (quantitative CT masks) is a series of its own
    assert sc_series, "no Secondary Capture series in Orthanc"
    sc = orthanc.download(sc_series[0]["Instances"][0])
    assert sr.StudyInstanceUID == study_uid and sc.StudyInstanceUID == study_uid
    assert sc.SOPClassUID == SC_SOP_CLASS and sc.PhotometricInterpretation == "RGB"
    texts = [item.TextValue for item in sr.ContentSequence if item.ValueType == "TEXT"]
    assert RESEARCH_USE_STATEMENT in texts
    return sr, sc


def test_echoscu_gets_an_answer(make_listener: MakeListener) -> None:
    listener = make_listener()
    binary = require_program("echoscu")
    done = subprocess.run([binary, "-aec", LISTENER_AET, LOOPBACK, str(listener.port)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def test_synthetic_series_round_trip(orthanc: Orthanc, make_listener: MakeListener, result_sink: ResultSink,
                                     synthetic_series: tuple[str, Path], tmp_path: Path) -> None:
    from covidct.service.store import JobStore

    study_uid, folder = synthetic_series
    store = JobStore(tmp_path / "jobs.db")
    listener = make_listener(port=orthanc.listener_port, store=store,
                             destination=(LOOPBACK, orthanc.dicom_port, orthanc.aet))
    sent = storescu(folder, listener.port)
    assert sent.returncode == 0, sent.stderr
    assert result_sink.wait(RESULT_TIMEOUT_S), f"no result; node status {listener.status()}"
    (series_uid, result), = result_sink.results.items()
    stored = sorted((tmp_path / "incoming" / study_uid / series_uid).glob("*.dcm"))
    assert len(stored) == len(list(folder.glob("*.dcm")))
    assert result["predicted_class"] in result["probabilities"]
    row = wait_for(lambda: (r := store.find_by_series(series_uid)) and r.status == "done" and r, 30.0)
    assert row and row.predicted_class == result["predicted_class"]
    sr, _ = check_results_in_orthanc(orthanc, study_uid)
    assert sr.PatientID == "PHANTOM-1"
    store.close()


@pytest.mark.realdata
def test_p001_jpeg_lossless_series_round_trip(orthanc: Orthanc, make_listener: MakeListener,
                                              result_sink: ResultSink, shared_data: Path,
                                              artifacts_dir: Path) -> None:
    folder = shared_data.joinpath(*P001)
    study_uid = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    destination = (LOOPBACK, orthanc.dicom_port, orthanc.aet)
    listener = make_listener(port=orthanc.listener_port, destination=destination)
    started = time.time()
    sent = storescu(folder, listener.port, "-xs")  # propose JPEG Lossless SV1: the data arrives compressed
    assert sent.returncode == 0, sent.stderr
    assert result_sink.wait(RESULT_TIMEOUT_S), f"no result; node status {listener.status()}"
    state = wait_for(lambda: next((s for s in listener.status() if s["sent_at"]), None), 60.0)
    assert state is not None and state["instances"] == P001_SLICES
    stored = next(Path(state["directory"]).glob("*.dcm"))
    assert pydicom.dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    sr, _ = check_results_in_orthanc(orthanc, study_uid)
    assert sr.PatientID == "98C14734-ASSH"
    timing = {"series": "COVID-CT-MD P001", "instances": state["instances"], "quiet_seconds": QUIET_S,
              "send_s": round(state["last_received"] - started, 2),
              "last_instance_to_result_s": round(state["analysed_at"] - state["last_received"], 2),
              "last_instance_to_sr_in_orthanc_s": round(state["sent_at"] - state["last_received"], 2),
              "analysis": "hu-ground-glass-rule (tests/dicomnet/conftest.py)"}
    (artifacts_dir / "dicom_node_p001_timing.json").write_text(json.dumps(timing, indent=2))
    print(json.dumps(timing))


def _send_with_pynetdicom(port: int, paths: list[Path]) -> list[int]:
    from pynetdicom import AE

    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=LISTENER_AET)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        assoc.release()


def test_truncated_instance_is_rejected_and_node_stays_healthy(make_listener: MakeListener,
                                                              synthetic_series: tuple[str, Path],
                                                              tmp_path: Path) -> None:
    _, folder = synthetic_series
    first, second = sorted(folder.glob("*.dcm"))[:2]
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(first.read_bytes()[:-TRUNCATE_BYTES])
    listener = make_listener(quiet=60.0)
    statuses = _send_with_pynetdicom(listener.port, [first, truncated, second])
    assert statuses[0] == 0 and statuses[2] == 0
    assert statuses[1] & 0xF000 == STATUS_CANNOT_UNDERSTAND
    assert len(listener.rejected) == 1 and "truncated" in listener.rejected[0]
    (state,) = listener.status()
    assert state["instances"] == 2 and listener.running
    assert _send_with_pynetdicom(listener.port, [first]) == [0]


@pytest.mark.realdata
def test_jpeg2000_series_is_received_compressed(make_listener: MakeListener, result_sink: ResultSink,
                                                shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "j2k"
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for source in (shared_data / "misc-ct" / "example_ct_dicom_j2k").iterdir():
        ds = pydicom.dcmread(source)  # these de-identified files carry empty UIDs, which no SCU can send
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = ds.get("StudyInstanceUID") or study
        ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or series
        ds.save_as(folder / f"{source.name}.dcm", enforce_file_format=True)  # pixel data stays J2K
    listener = make_listener()
    sent = storescu(folder, listener.port, "-xv")  # -xv: propose JPEG 2000 lossless
    assert sent.returncode == 0, sent.stderr
    assert result_sink.wait(RESULT_TIMEOUT_S), f"no result; node status {listener.status()}"
    state = wait_for(lambda: next((s for s in listener.status() if s["status"] == "done"), None), 30.0)
    assert state and state["instances"] == len(list(folder.iterdir()))
    stored = next(Path(state["directory"]).glob("*.dcm"))
    assert pydicom.dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000Lossless


def test_unreachable_destination_is_recorded_and_the_result_kept(make_listener: MakeListener,
                                                                 result_sink: ResultSink,
                                                                 synthetic_series: tuple[str, Path]) -> None:
    _, folder = synthetic_series
    listener = make_listener(destination=(LOOPBACK, free_port(), "NOBODY"))
    files = sorted(folder.glob("*.dcm"))
    assert _send_with_pynetdicom(listener.port, files) == [0] * len(files)
    state = wait_for(lambda: next((s for s in listener.status() if s["status"] == "failed"), None), 60.0)
    assert state is not None and "Could not associate with NOBODY" in state["error"]
    assert result_sink.results and listener.running
