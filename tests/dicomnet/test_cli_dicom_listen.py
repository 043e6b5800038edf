"""`covidct dicom-listen`: configuration errors are clear; with a checkpoint it runs as a real node."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.dicomnet.conftest import (
    LISTENER_AET,
    LOOPBACK,
    Orthanc,
    free_port,
    require_program,
    wait_for,
    write_synthetic_series,
)
from typer.testing import CliRunner

import covidct.cli.service_commands  # noqa: F401  (registers the commands)
from covidct.cli.app import app

runner = CliRunner()
MISSING_CHECKPOINT = "no-such.ckpt"
TINY_SIZE = 64
NODE_START_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 120.0
NEVER_COMPLETE_S = 3600.0
"""Quiet time of the first node: the series is acknowledged but never counts as complete."""
SETTLE_S = 3.0


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["dicom-listen", "--checkpoint", MISSING_CHECKPOINT, *args])
    return result.exit_code, " ".join(result.output.split())


def test_bad_ae_title_is_reported(tmp_path: Path) -> None:
    code, output = _invoke("--ae-title", "MUCH-TOO-LONG-AE-TITLE", "--storage", str(tmp_path))
    assert code != 0 and "Invalid AE title" in output


def test_partial_destination_is_reported(tmp_path: Path) -> None:
    code, output = _invoke("--dest-host", LOOPBACK, "--storage", str(tmp_path))
    assert code != 0 and "Give --dest-host, --dest-port and --dest-ae together" in output


def test_port_in_use_is_reported_before_loading_the_model(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, output = _invoke("--host", LOOPBACK, "--port", str(port), "--storage", str(tmp_path),
                               "--db", str(tmp_path / "jobs.db"))
    assert code != 0 and f"Cannot listen for DICOM on {LOOPBACK}:{port}" in output and "--port" in output
    assert not (tmp_path / "jobs.db").exists()


def _tiny_checkpoint(path: Path) -> Path:
    """An untrained covidnet-ct2-s at 64 px (no trained model needed to exercise the node)."""
    from covidct.models import create_model, save_checkpoint
    from covidct.preprocessing import get_recipe

    recipe = get_recipe("covidnet-ct2", size=TINY_SIZE).to_dict()
    save_checkpoint(path, create_model("covidnet-ct2-s"), recipe=recipe,
                    provenance={"data": "untrained (dicom-listen test)"})
    return path


@pytest.mark.integration
def test_cli_node_analyses_a_series_with_the_predictor(tmp_path: Path) -> None:
    from covidct.service.store import JobStore

    storescu = require_program("storescu")
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.ckpt")
    study, _ = write_synthetic_series(tmp_path / "series")
    port, db = free_port(), tmp_path / "jobs.db"
    command = [sys.executable, "-m", "covidct", "dicom-listen", "--checkpoint", str(checkpoint), "--host",
               LOOPBACK, "--port", str(port), "--storage", str(tmp_path / "incoming"), "--db", str(db),
               "--quiet-seconds", "1", "--no-explain"]
    with (tmp_path / "node.log").open("w") as log:
        node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = wait_for(lambda: subprocess.run(["echoscu", "-aec", LISTENER_AET, LOOPBACK, str(port)],
                                                capture_output=True, check=False).returncode == 0,
                         NODE_START_TIMEOUT_S, interval=0.5)
        assert ready, (tmp_path / "node.log").read_text()
        sent = subprocess.run([storescu, "-aec", LISTENER_AET, "+sd", LOOPBACK, str(port),
                               str(tmp_path / "series")], capture_output=True, text=True, check=False)
        assert sent.returncode == 0, sent.stderr
        store = JobStore(db)
        done = wait_for(lambda: [j for j in store.list_jobs(status="done")], RESULT_TIMEOUT_S, interval=0.5)
        assert done, (tmp_path / "node.log").read_text()
        assert done[0].study_uid == study and done[0].predicted_class in done[0].probabilities
        store.close()
    finally:
        os.kill(node.pid, signal.SIGTERM)
        node.wait(30)
    assert node.returncode == 0


def _start_node(tmp_path: Path, checkpoint: Path, port: int, quiet_s: float, orthanc: Orthanc,
                log_name: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "covidct", "dicom-listen", "--checkpoint", str(checkpoint), "--host",
               LOOPBACK, "--port", str(port), "--storage", str(tmp_path / "incoming"),
               "--db", str(tmp_path / "jobs.db"), "--quiet-seconds", str(quiet_s), "--no-explain",
               "--dest-host", LOOPBACK, "--dest-port", str(orthanc.dicom_port), "--dest-ae", orthanc.aet]
    with (tmp_path / log_name).open("w") as log:
        node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    echo = ["echoscu", "-aec", LISTENER_AET, LOOPBACK, str(port)]
    ready = wait_for(lambda: node.poll() is not None
                     or subprocess.run(echo, capture_output=True, check=False).returncode == 0,
                     NODE_START_TIMEOUT_S, interval=0.5)
    assert ready and node.poll() is None, (tmp_path / log_name).read_text()
    return node


@pytest.mark.integration
def test_series_acknowledged_before_a_kill_is_analysed_and_reported_once_after_restart(
        tmp_path: Path, orthanc: Orthanc) -> None:
    """Kill -9 the node after it acknowledged a series and before the series was complete; the
    restarted node analyses it from disk and sends one SR."""
    from covidct.service.store import JobStore

    storescu = require_program("storescu")
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.ckpt")
    study, _ = write_synthetic_series(tmp_path / "series")
    sent_files = sorted((tmp_path / "series").glob("*.dcm"))
    port = orthanc.listener_port
    node = _start_node(tmp_path, checkpoint, port, NEVER_COMPLETE_S, orthanc, "node1.log")
    try:
        sent = subprocess.run([storescu, "-aec", LISTENER_AET, "+sd", LOOPBACK, str(port),
                               str(tmp_path / "series")], capture_output=True, text=True, check=False)
        assert sent.returncode == 0, sent.stderr  # every instance acknowledged
        assert len(list((tmp_path / "incoming").glob("*/*/*.dcm"))) == len(sent_files)
    finally:
        node.kill()  # SIGKILL: no shutdown code runs
        node.wait(30)
    store = JobStore(tmp_path / "jobs.db")
    assert store.list_jobs() == []  # acknowledged, not analysed
    node = _start_node(tmp_path, checkpoint, port, 1.0, orthanc, "node2.log")
    try:
        done = wait_for(lambda: store.list_jobs(status="done"), RESULT_TIMEOUT_S, interval=0.5)
        assert done, (tmp_path / "node2.log").read_text()
        sr = wait_for(lambda: [i for i in orthanc.instances_of_study(study)
                               if i["MainDicomTags"].get("SOPInstanceUID") and _is_sr(orthanc, i)], 30.0)
        assert sr, (tmp_path / "node2.log").read_text()
        time.sleep(SETTLE_S)  # nothing more arrives
        jobs = store.list_jobs()
        assert len(jobs) == 1 and jobs[0].status == "done" and jobs[0].study_uid == study
        assert len([i for i in orthanc.instances_of_study(study) if _is_sr(orthanc, i)]) == 1
    finally:
        os.kill(node.pid, signal.SIGTERM)
        node.wait(30)
        store.close()
    assert node.returncode == 0


def _is_sr(orthanc: Orthanc, instance: dict) -> bool:
    series = orthanc.get(f"/series/{instance['ParentSeries']}")
    return series["MainDicomTags"].get("Modality") == "SR"
