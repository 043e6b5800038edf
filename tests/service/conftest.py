"""Service fixtures: a tiny (untrained) checkpoint, tiny synthetic DICOM studies, a real server process.

The checkpoint is an UNTRAINED covidnet-ct2-s at 64 px: it exercises the plumbing (reading, model,
explanations, storage, HTTP), not accuracy.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from covidct.service.predictor import Predictor
from covidct.service.store import JobStore

STUDY_SHAPE = (16, 96, 96)
STUDY_SPACING = (6.0, 1.6, 1.6)
MODEL_SIZE = 64
TEST_THRESHOLD = 0.3
SERVER_START_TIMEOUT_S = 90.0
LABELS = ("COVID-19", "Normal", "Pneumonia")


def need(module: str, *names: str) -> ModuleType:
    """Import ``module`` or skip with the reason (another area's module is not there yet)."""
    mod = pytest.importorskip(module, reason=f"{module} is not available")
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        pytest.skip(f"{module} has no {', '.join(missing)} yet")
    return mod


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained covidnet-ct2-s checkpoint with a 64 px covidnet-ct2 recipe and a threshold."""
    models = need("covidct.models", "create_model", "save_checkpoint", "load_checkpoint")
    preprocessing = need("covidct.preprocessing", "get_recipe")
    import torch

    torch.manual_seed(0)
    model = models.create_model("covidnet-ct2-s")
    path = tmp_path_factory.mktemp("ckpt") / "tiny-covidnet-ct2-s.ckpt"
    recipe = preprocessing.get_recipe("covidnet-ct2", size=MODEL_SIZE).to_dict()
    provenance = {"data": "untrained, for service plumbing tests", "code_version": "test"}
    models.save_checkpoint(path, model, recipe=recipe, provenance=provenance,
                           extra={"threshold": TEST_THRESHOLD})
    return path


@pytest.fixture(scope="session")
def predictor(tiny_checkpoint: Path) -> Predictor:
    """One warmed-up Predictor on the tiny checkpoint, shared by the in-process tests."""
    pred = Predictor([tiny_checkpoint])
    pred.warm_up()
    return pred


def write_study(out_dir: Path, index: int, label: str | None = None) -> Path:
    """A tiny synthetic phantom written as a DICOM series with its own UIDs; returns the folder."""
    synthetic = need("covidct.synthetic", "make_phantom")
    dicom_write = need("covidct.io.dicom_write", "write_dicom_series")
    from pydicom.uid import generate_uid

    phantom = synthetic.make_phantom(label or LABELS[index % len(LABELS)], shape=STUDY_SHAPE,
                                     spacing=STUDY_SPACING, seed=index)
    folder = out_dir / f"study_{index:03d}"
    dicom_write.write_dicom_series(phantom.volume, folder, seed=index,
                                   study_uid=generate_uid(entropy_srcs=[f"study-{index}"]),
                                   series_uid=generate_uid(entropy_srcs=[f"series-{index}"]))
    return folder


def zip_bytes(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder.parent).as_posix())
    return buf.getvalue()


@pytest.fixture(scope="session")
def study_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """study_factory(i) -> folder of synthetic DICOM study i (cached for the session)."""
    root = tmp_path_factory.mktemp("studies")
    cache: dict[int, Path] = {}

    def make(i: int) -> Path:
        if i not in cache:
            cache[i] = write_study(root, i)
        return cache[i]

    return make


@pytest.fixture(scope="session")
def one_study(study_factory: Callable[[int], Path]) -> Path:
    return study_factory(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """`covidct serve` in a subprocess on a free loopback port."""

    checkpoint: Path
    db: Path
    data_dir: Path
    workers: int = 1
    max_upload_mb: float = 64.0
    explain: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.log = self.data_dir.parent / f"server-{self.port}-{int(time.time() * 1000)}.log"
        cmd = [sys.executable, "-m", "covidct.cli.main", "serve", "--checkpoint", str(self.checkpoint),
               "--db", str(self.db), "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--workers", str(self.workers), "--max-upload-mb", str(self.max_upload_mb)]
        if not self.explain:
            cmd.append("--no-explain")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not start in {SERVER_START_TIMEOUT_S} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture()
def server_factory(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """server_factory(**kw) starts a server on this test's db/data dir; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def make(**kw: object) -> ServerProcess:
        kw.setdefault("db", tmp_path / "service.db")
        kw.setdefault("data_dir", tmp_path / "data")
        srv = ServerProcess(checkpoint=tiny_checkpoint, **kw).start()  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def make_token(db: Path, name: str = "tester") -> str:
    store = JobStore(db)
    try:
        return store.create_token(name)
    finally:
        store.close()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
