"""Fixtures of the OHIF tests: a real Orthanc with its DICOMweb plugin, OHIF's built app from npm, and a
synthetic study (CT series written by covidct, its SR and SEG) stored in that Orthanc.

Orthanc is started on free ports with its own storage and JSON config and stopped by PID (the helpers of
tests/dicomnet/conftest.py); OHIF comes from `scripts/fetch-ohif.sh` (npm pack, cached in .cache/ohif).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from tests.conftest import REPO_ROOT
from tests.dicomnet.conftest import (
    GDCM_PLUGIN_DIR,
    LOOPBACK,
    ORTHANC_BINARIES,
    Orthanc,
    _orthanc_config,
    _stop,
    _wait_ready,
    free_port,
)

DICOMWEB_PLUGIN = GDCM_PLUGIN_DIR / "libOrthancDicomWeb.so"
DICOMWEB_ROOT = "/dicom-web/"
FETCH_OHIF = REPO_ROOT / "scripts" / "fetch-ohif.sh"
FETCH_TIMEOUT_S = 300
FETCH_UNREACHABLE = 3
"""fetch-ohif.sh's exit status when npm is missing or the registry cannot be reached."""
HTTP_TIMEOUT_S = 30.0
PHANTOM_SHAPE = (32, 160, 160)
PHANTOM_SPACING = (2.5, 1.0, 1.0)
PHANTOM_SEED = 1
PATIENT_ID = "COVIDCT-OHIF-1"
SOP_INSTANCE_UID_TAG = "00080018"
SERIES_INSTANCE_UID_TAG = "0020000E"
MODALITY_TAG = "00080060"


@dataclass
class DicomWebOrthanc:
    """A running Orthanc with DICOMweb at ``dicomweb_url`` (REST at ``http_url``)."""

    server: Orthanc
    http_port: int

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def dicomweb_url(self) -> str:
        return self.http_url + DICOMWEB_ROOT.rstrip("/")

    def upload(self, paths: list[Path]) -> None:
        """Store DICOM files through Orthanc's REST API (POST /instances)."""
        import httpx

        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            for path in paths:
                client.post(f"{self.http_url}/instances", content=path.read_bytes()).raise_for_status()

    def dicomweb_json(self, path: str) -> Any:
        """A QIDO-RS / WADO-RS metadata answer (DICOM JSON) for ``path`` below the DICOMweb root."""
        import httpx

        response = httpx.get(f"{self.dicomweb_url}/{path.lstrip('/')}", timeout=HTTP_TIMEOUT_S,
                             headers={"Accept": "application/dicom+json"})
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="session")
def dicomweb_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomWebOrthanc]:
    """A real Orthanc with DICOMweb on loopback: free ports, temporary storage, stopped by PID."""
    binary = next((b for b in ORTHANC_BINARIES if Path(b).is_file()), None) or shutil.which("Orthanc")
    if binary is None:
        pytest.skip("Orthanc is not installed (scripts/install-system-deps.sh installs it)")
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip(f"{DICOMWEB_PLUGIN} is absent (apt-get install orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc-dicomweb")
    http_port = free_port()
    config = _orthanc_config(root, http_port, free_port(), free_port())
    config["DicomServerEnabled"] = False
    config["Plugins"] = [*config["Plugins"], str(DICOMWEB_PLUGIN)]
    config["DicomWeb"] = {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False, "Ssl": False,
                          "StudiesMetadata": "Full", "SeriesMetadata": "Full"}
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = root / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://{LOOPBACK}:{http_port}", 0, config["DicomAet"], 0, process, log_path)
    try:
        _wait_ready(server)
        yield DicomWebOrthanc(server, http_port)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def ohif_dist() -> Path:
    """OHIF's built app (``dist/``), fetched once with npm into .cache/ohif; skips when npm cannot reach
    the registry."""
    try:
        done = subprocess.run(["bash", str(FETCH_OHIF)], capture_output=True, text=True,
                              timeout=FETCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{FETCH_OHIF.name} took over {FETCH_TIMEOUT_S} s (npm registry unreachable?)")
    if done.returncode == FETCH_UNREACHABLE:
        pytest.skip(f"OHIF could not be fetched from npm: {done.stderr.strip()[-500:]}")
    assert done.returncode == 0, f"{FETCH_OHIF.name} failed: {done.stderr[-2000:]}"
    dist = Path(done.stdout.strip().splitlines()[-1])
    assert (dist / "index.html").is_file(), f"{dist} has no index.html"
    return dist


# ---- the study: CT written by covidct, its SR and SEG ------------------------------------------------
@dataclass
class CovidctStudy:
    """A synthetic CT study analysed by covidct (quantitative CT, no weights) with its DICOM results."""

    study_uid: str
    ct_series_uid: str
    ct_files: list[Path]
    sop_uids: list[str]
    """SOPInstanceUID of each CT slice in the volume's slice order (superior -> inferior)."""
    sr_path: Path
    seg_path: Path
    lung_labels: np.ndarray
    lesion_labels: np.ndarray
    """(z, y, x) uint8 on the CT grid: 0 none, 1 ground glass, 2 consolidation."""
    result: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        return [*self.ct_files, self.sr_path, self.seg_path]


@pytest.fixture(scope="session")
def covidct_study(tmp_path_factory: pytest.TempPathFactory) -> CovidctStudy:
    """A COVID-19 phantom written with covidct's DICOM writer and analysed by the Predictor (HU only);
    its SEG is what `covidct predict` writes (`write_study_outputs`), its SR what the DICOM node sends."""
    from covidct.io.dicom_write import write_dicom_series
    from covidct.service.dicom_export import build_structured_report
    from covidct.service.predictor import Predictor
    from covidct.service.report import write_study_outputs
    from covidct.synthetic import make_phantom

    root = tmp_path_factory.mktemp("covidct-study")
    phantom = make_phantom("COVID-19", shape=PHANTOM_SHAPE, spacing=PHANTOM_SPACING, seed=PHANTOM_SEED)
    ct_dir = root / "ct"
    ct_files = write_dicom_series(phantom.volume, ct_dir, shuffle_names=False, patient_id=PATIENT_ID)
    result = Predictor([], explain=True).predict(ct_dir)
    assert result.lesion_labels is not None and result.lesion_labels.any(), "the phantom has lesions"
    written = write_study_outputs(result, root / "report")
    assert "seg" in written, f"covidct wrote no SEG: {result.to_dict().get('masks')}"
    headers = result.source_headers
    sr_path = root / "sr.dcm"
    build_structured_report(headers, result).save_as(sr_path, enforce_file_format=True)
    return CovidctStudy(str(headers[0].StudyInstanceUID), str(headers[0].SeriesInstanceUID), ct_files,
                        [str(ds.SOPInstanceUID) for ds in headers], sr_path, written["seg"],
                        result.lung_labels, result.lesion_labels, result.to_dict())


@pytest.fixture(scope="session")
def study_in_orthanc(dicomweb_orthanc: DicomWebOrthanc, covidct_study: CovidctStudy) -> CovidctStudy:
    """``covidct_study`` stored in the DICOMweb Orthanc (CT series, SR, SEG)."""
    dicomweb_orthanc.upload(covidct_study.files)
    return covidct_study


def wado_instance(orthanc: DicomWebOrthanc, study_uid: str, series_uid: str) -> pydicom.Dataset:
    """The single instance of a series, retrieved with WADO-RS (multipart/related; application/dicom)."""
    import email.parser

    import httpx

    instances = orthanc.dicomweb_json(f"studies/{study_uid}/series/{series_uid}/instances")
    assert len(instances) == 1, f"expected one instance in series {series_uid}, got {len(instances)}"
    sop_uid = instances[0][SOP_INSTANCE_UID_TAG]["Value"][0]
    url = f"{orthanc.dicomweb_url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    response = httpx.get(url, timeout=HTTP_TIMEOUT_S,
                         headers={"Accept": 'multipart/related; type="application/dicom"'})
    response.raise_for_status()
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + response.content)
    parts = [p for p in message.walk() if p.get_content_type() == "application/dicom"]
    assert len(parts) == 1, f"WADO-RS answered {len(parts)} DICOM parts for one instance"
    return pydicom.dcmread(io.BytesIO(parts[0].get_payload(decode=True)))
