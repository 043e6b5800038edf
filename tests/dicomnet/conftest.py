"""Fixtures of the DICOM node tests: a real Orthanc on loopback, DCMTK tools, CT series, an analysis.

Orthanc is started by hand with a temporary JSON config on free ports and stopped by PID; tests that
need it or DCMTK skip with the reason when the programs are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LOOPBACK = "127.0.0.1"
ORTHANC_AET = "ORTHANC"
LISTENER_AET = "COVIDCT"
ORTHANC_BINARIES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
GDCM_PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
ORTHANC_START_TIMEOUT_S = 30.0
ORTHANC_STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0

HU_AIR = -1000.0
HU_LUNG = -850.0
HU_GROUND_GLASS = -500.0
HU_SOFT_TISSUE = 40.0
HU_INTERCEPT = -1024.0
LUNG_RANGE = (-1000.0, -300.0)
GROUND_GLASS_RANGE = (-750.0, -300.0)
SYNTHETIC_SHAPE = (12, 64, 64)
SYNTHETIC_SPACING = (2.5, 0.8, 0.8)
GREY_MAX = 255
LUNG_WINDOW = (-600.0, 1500.0)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/install-system-deps.sh installs DCMTK and Orthanc)")
    return path


@dataclass
class Orthanc:
    """A running Orthanc: its REST URL, DICOM port and AE title."""

    http_url: str
    dicom_port: int
    aet: str
    listener_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def get(self, path: str) -> Any:
        import httpx

        response = httpx.get(f"{self.http_url}{path}", timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("content-type", "") else response.content

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of a study, each with its main DICOM tags (REST /tools/find)."""
        import httpx

        response = httpx.post(f"{self.http_url}/tools/find", timeout=HTTP_TIMEOUT_S,
                              json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid},
                                    "Expand": True})
        response.raise_for_status()
        return list(response.json())

    def download(self, instance_id: str) -> pydicom.Dataset:
        import io

        return pydicom.dcmread(io.BytesIO(self.get(f"/instances/{instance_id}/file")))


def _orthanc_config(root: Path, http_port: int, dicom_port: int, listener_port: int) -> dict[str, Any]:
    plugins = sorted(str(p) for p in GDCM_PLUGIN_DIR.glob("libOrthancGdcm*.so"))
    return {
        "Name": "covidct-test",
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "DicomAet": ORTHANC_AET, "DicomPort": dicom_port, "HttpPort": http_port, "DicomServerEnabled": True,
        "HttpServerEnabled": True, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomModalities": {"covidct": [LISTENER_AET, LOOPBACK, listener_port]},
        "Plugins": plugins, "SaveJobs": False, "StorageCompression": False, "ConcurrentJobs": 1,
    }


def _wait_ready(server: Orthanc) -> None:
    import httpx

    deadline = time.monotonic() + ORTHANC_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited at start: {server.log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.http_url}/system", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer in {ORTHANC_START_TIMEOUT_S} s: "
                       f"{server.log_path.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(ORTHANC_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc on loopback, free ports, temporary storage; stopped by PID at teardown."""
    binary = next((b for b in ORTHANC_BINARIES if Path(b).is_file()), None) or shutil.which("Orthanc")
    if binary is None:
        pytest.skip("Orthanc is not installed (scripts/install-system-deps.sh installs it)")
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port, listener_port = free_port(), free_port(), free_port()
    config = root / "orthanc.json"
    config.write_text(json.dumps(_orthanc_config(root, http_port, dicom_port, listener_port), indent=2))
    log_path = root / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://{LOOPBACK}:{http_port}", dicom_port, ORTHANC_AET, listener_port, process,
                     log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(process)


# ---- CT series ------------------------------------------------------------------
def _phantom_slice(z: int, shape: tuple[int, int]) -> np.ndarray:
    """A chest-like HU slice: air, soft-tissue body, two lungs with a ground-glass patch."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = rows / 2, cols / 2
    hu = np.full(shape, HU_AIR, dtype=np.float32)
    hu[((y - cy) / (0.42 * rows)) ** 2 + ((x - cx) / (0.46 * cols)) ** 2 <= 1] = HU_SOFT_TISSUE
    for side in (-1, 1):
        lung = ((y - cy) / (0.30 * rows)) ** 2 + ((x - cx - side * 0.2 * cols) / (0.14 * cols)) ** 2 <= 1
        hu[lung] = HU_LUNG
    patch = ((y - cy) ** 2 + (x - cx - 0.2 * cols) ** 2) <= (0.06 * rows + z % 3) ** 2
    hu[patch] = HU_GROUND_GLASS
    return hu


def write_synthetic_series(out_dir: Path, *, shape: tuple[int, int, int] = SYNTHETIC_SHAPE,
                           spacing: tuple[float, float, float] = SYNTHETIC_SPACING) -> tuple[str, list[Path]]:
    """A small uncompressed CT series written with pydicom; returns (StudyInstanceUID, files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for z in range(shape[0]):
        stored = np.round(_phantom_slice(z, shape[1:]) - HU_INTERCEPT).astype(np.uint16)
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "Phantom^Test", "PHANTOM-1"
        ds.PatientSex, ds.PatientBirthDate = "O", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "ACC1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 2, z + 1
        ds.ImagePositionPatient = [0.0, 0.0, -z * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[2]], spacing[0]
        ds.Rows, ds.Columns = shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = HU_INTERCEPT, 1
        ds.PixelData = stored.tobytes()
        path = out_dir / f"slice_{z:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study, files


@pytest.fixture
def synthetic_series(tmp_path: Path) -> tuple[str, Path]:
    """(StudyInstanceUID, folder) of a fresh synthetic CT series."""
    study, _ = write_synthetic_series(tmp_path / "synthetic")
    return study, tmp_path / "synthetic"


# ---- a real (model-free) analysis ------------------------------------------------
def _read_hu(series_dir: Path) -> np.ndarray:
    """The series as a (z, y, x) HU array (covidct.io.read_volume)."""
    from covidct.io import read_volume

    return np.asarray(read_volume(series_dir).array, dtype=np.float32)


def _overlay(hu_slice: np.ndarray) -> np.ndarray:
    centre, width = LUNG_WINDOW
    grey = (np.clip((hu_slice - (centre - width / 2)) / width, 0, 1) * GREY_MAX).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    ggo = (hu_slice >= GROUND_GLASS_RANGE[0]) & (hu_slice < GROUND_GLASS_RANGE[1])
    rgb[ggo] = (GREY_MAX, 0, 0)
    return rgb


def hu_rule_analysis(series_dir: Path) -> dict[str, Any]:
    """A model-free but real analysis: ground-glass fraction of lung-range voxels -> two 'probabilities'."""
    hu = _read_hu(series_dir)
    lung = (hu >= LUNG_RANGE[0]) & (hu < LUNG_RANGE[1])
    ggo = (hu >= GROUND_GLASS_RANGE[0]) & (hu < GROUND_GLASS_RANGE[1])
    fraction = float(ggo.sum() / max(1, lung.sum()))
    probs = {"Normal": round(1.0 - fraction, 6), "COVID-19": round(fraction, 6)}
    per_slice = ggo.reshape(hu.shape[0], -1).sum(axis=1)
    key = int(np.argmax(per_slice))
    return {"predicted_class": max(probs, key=lambda k: probs[k]), "probabilities": probs,
            "model_name": "hu-ground-glass-rule", "model_version": "test-1", "num_slices": int(hu.shape[0]),
            "mean_lung_hu": float(hu[lung].mean()) if lung.any() else None,
            "key_images": [(key, _overlay(hu[key]))]}


@dataclass
class ResultSink:
    """Collects on_result calls; `wait()` blocks until one for a series arrived."""

    results: dict[str, Any] = field(default_factory=dict)
    event: threading.Event = field(default_factory=threading.Event)

    def __call__(self, series_uid: str, result: Any) -> None:
        self.results[series_uid] = result
        self.event.set()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.results:
            self.event.wait(0.1)
        return bool(self.results)


@pytest.fixture
def result_sink() -> ResultSink:
    return ResultSink()


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
