"""Time from the last instance of COVID-CT-MD P001 (148 slices) to its SR stored in Orthanc, with the
production analysis: the `Predictor` on an (untrained) covidnet-ct2-s checkpoint at the recipe's
default 512 px, with and without explanations, the default quiet time. Run by hand:

    .venv/bin/python -m pytest tests/dicomnet/test_dicom_node_benchmark.py -m slow -s
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pydicom
import pytest
from tests.dicomnet.conftest import LISTENER_AET, LOOPBACK, Orthanc, ResultSink, wait_for
from tests.dicomnet.test_dicom_node import P001, P001_SLICES, check_results_in_orthanc, storescu

from covidct.service.dicom_node import DEFAULT_QUIET_SECONDS, DicomListener

MODEL = "covidnet-ct2-s"
RECIPE = "covidnet-ct2"
TIMEOUT_S = 900.0

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.integration]


def _checkpoint(path: Path) -> Path:
    from covidct.models import create_model, save_checkpoint
    from covidct.preprocessing import get_recipe

    save_checkpoint(path, create_model(MODEL), recipe=get_recipe(RECIPE).to_dict(),
                    provenance={"data": "untrained (DICOM node timing)"})
    return path


@pytest.mark.parametrize("explain", [True, False], ids=["explain", "no-explain"])
def test_p001_time_to_sr_with_the_predictor(orthanc: Orthanc, shared_data: Path, tmp_path: Path,
                                            artifacts_dir: Path, explain: bool) -> None:
    from covidct.service.predictor import Predictor

    predictor = Predictor([_checkpoint(tmp_path / "untrained.ckpt")], explain=explain)
    folder = shared_data.joinpath(*P001)
    study_uid = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    sink = ResultSink()
    listener = DicomListener(LISTENER_AET, orthanc.listener_port, storage_dir=tmp_path / "incoming",
                             analyse=predictor.predict, quiet_seconds=DEFAULT_QUIET_SECONDS,
                             destination=(LOOPBACK, orthanc.dicom_port, orthanc.aet), on_result=sink,
                             host=LOOPBACK).start()
    try:
        started = time.time()
        sent = storescu(folder, listener.port, "-xs")
        assert sent.returncode == 0, sent.stderr
        state = wait_for(lambda: next((s for s in listener.status() if s["sent_at"] or s["error"]), None),
                         TIMEOUT_S, interval=0.5)
    finally:
        listener.stop()
    assert state is not None and state["error"] is None, state
    assert state["instances"] == P001_SLICES
    check_results_in_orthanc(orthanc, study_uid)
    result = sink.results[state["series_uid"]]
    timing = {
        "series": "COVID-CT-MD P001 (148 slices, JPEG Lossless)", "model": f"{MODEL} untrained, 512 px",
        "explain": explain,
        "quiet_seconds": DEFAULT_QUIET_SECONDS, "send_s": round(state["last_received"] - started, 2),
        "last_instance_to_result_s": round(state["analysed_at"] - state["last_received"], 2),
        "last_instance_to_sr_in_orthanc_s": round(state["sent_at"] - state["last_received"], 2),
        "predictor_timings_s": result.timings, "key_images": len(result.overlays),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared)",
    }
    name = f"dicom_node_p001_predictor_timing_{'explain' if explain else 'no_explain'}.json"
    (artifacts_dir / name).write_text(json.dumps(timing, indent=2))
    print(json.dumps(timing))
