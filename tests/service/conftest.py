"""Service fixtures: a tiny (untrained) checkpoint, tiny synthetic DICOM studies, a real server process,
and a real PostgreSQL server.

The checkpoint is an UNTRAINED covidnet-ct2-s at 64 px: it exercises the plumbing (reading, model,
explanations, storage, HTTP), not accuracy. PostgreSQL (Debian package `postgresql`, installed by
scripts/install-system-deps.sh) is started by hand like Orthanc: initdb into a temporary folder,
`pg_ctl start` on a free loopback port, stopped by `pg_ctl stop`; as root it runs as the `postgres`
user (or `nobody`). Its tests skip when it is absent only when not root; as root (CI) they fail.
"""

from __future__ import annotations

import glob
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from covidct.service.predictor import Predictor
from covidct.service.store import JobStore

STUDY_SHAPE = (16, 96, 96)
STUDY_SPACING = (6.0, 1.6, 1.6)
MODEL_SIZE = 64
TEST_THRESHOLD = 0.3
SERVER_START_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 120.0
"""How long an API test waits for one queued study to end (done or failed)."""
LABELS = ("COVID-19", "Normal", "Pneumonia")
LOOPBACK = "127.0.0.1"
PG_USER = "covidct"
PG_START_TIMEOUT_S = 60
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_RUN_AS = ("postgres", "nobody")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained covidnet-ct2-s checkpoint with a 64 px covidnet-ct2 recipe and a threshold."""
    import torch

    from covidct import models, preprocessing

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
    from pydicom.uid import generate_uid

    from covidct import synthetic
    from covidct.io import dicom_write

    phantom = synthetic.make_phantom(label or LABELS[index % len(LABELS)], shape=STUDY_SHAPE,
                                     spacing=STUDY_SPACING, seed=index)
    folder = out_dir / f"study_{index:03d}"
    dicom_write.write_dicom_series(phantom.volume, folder, seed=index,
                                   study_uid=generate_uid(entropy_srcs=[f"study-{index}"]),
                                   series_uid=generate_uid(entropy_srcs=[f"series-{index}"]))
    return folder


def corrupt_pixels(folder: Path) -> Path:
    """Cut the pixel data of every DICOM file in ``folder`` in half: headers stay readable (discovery
    finds the study), decoding fails for every slice, so reading the study raises a CovidCTError."""
    for path in folder.iterdir():
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - len(data) // 4])
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
    """`covidct serve` in a subprocess on a free loopback port (no checkpoint: quantitative CT only)."""

    checkpoint: Path | None
    db: Path
    data_dir: Path
    workers: int = 1
    max_upload_mb: float = 64.0
    explain: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the server process (e.g. its own TMPDIR)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.log = self.data_dir.parent / f"server-{self.port}-{int(time.time() * 1000)}.log"
        model = ["--checkpoint", str(self.checkpoint)] if self.checkpoint is not None else []
        cmd = [sys.executable, "-m", "covidct.cli.main", "serve", *model,
               "--db", str(self.db), "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--workers", str(self.workers), "--max-upload-mb", str(self.max_upload_mb)]
        if not self.explain:
            cmd.append("--no-explain")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **self.env}
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
        kw.setdefault("checkpoint", tiny_checkpoint)
        srv = ServerProcess(**kw).start()  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


HOSTILE_MAX_UPLOAD_MB = 2


@pytest.fixture(scope="session")
def loopback_server(tiny_checkpoint: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `covidct serve` shared by the hostile-input tests: upload limit 2 MB, no explanations, and
    its own TMPDIR (``env["TMPDIR"]``) so that tests can see whether anything was spooled there."""
    root = tmp_path_factory.mktemp("loopback-server")
    tmpdir = root / "server-tmp"
    tmpdir.mkdir()
    srv = ServerProcess(checkpoint=tiny_checkpoint, db=root / "service.db", data_dir=root / "data",
                        max_upload_mb=HOSTILE_MAX_UPLOAD_MB, explain=False,
                        env={"TMPDIR": str(tmpdir)}).start()
    try:
        yield srv
    finally:
        srv.stop()


def make_token(db: Path | str, name: str = "tester") -> str:
    store = JobStore(db)
    try:
        return store.create_token(name)
    finally:
        store.close()


def wait_done(client: Any, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict:
    """Poll ``GET /studies/{job_id}`` (a TestClient or httpx client holding its credential) until the job
    is done or failed; its JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/studies/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished in {timeout} s: {job}")


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---- PostgreSQL ---------------------------------------------------------------------------------
def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"{PG_BIN_GLOB}/{name}"))
    return found[-1] if found else shutil.which(name)


def _pg_run_as() -> str | None:
    """The unprivileged user that runs postgres when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in PG_RUN_AS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {PG_RUN_AS} exists to run PostgreSQL")


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, loopback only)."""

    root: Path
    port: int
    run_as: str | None
    pg_ctl: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@{LOOPBACK}:{self.port}/{database}"

    def run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=PG_START_TIMEOUT_S + 30)

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=LOOPBACK, port=self.port, user=PG_USER, dbname="postgres",
                             autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")  # a throw-away cluster


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start in a new temporary folder; skips (not root) or fails (root) when absent."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        reason = ("PostgreSQL is not installed (initdb/pg_ctl not found); scripts/install-system-deps.sh "
                  "installs the Debian package `postgresql`")
        if os.geteuid() == 0:
            pytest.fail(reason + " - as root it must be there", pytrace=False)
        pytest.skip(reason)
    import psycopg  # noqa: F401 - pinned in requirements.lock: a missing install step fails here
    run_as = _pg_run_as()
    root = Path(tempfile.mkdtemp(prefix="covidct-pg-"))
    if run_as:
        user = pwd.getpwnam(run_as)
        os.chown(root, user.pw_uid, user.pw_gid)
    server = PostgresServer(root=root, port=free_port(), run_as=run_as, pg_ctl=pg_ctl)
    init = server.run(initdb, "-D", str(server.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "-N")
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    options = f"-p {server.port} -k {root} -c listen_addresses={LOOPBACK}"
    start = server.run(pg_ctl, "-D", str(server.data), "-o", options, "-l", str(root / "postgres.log"),
                       "-w", "-t", str(PG_START_TIMEOUT_S), "start")
    if start.returncode != 0:
        log = (root / "postgres.log").read_text() if (root / "postgres.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log}")
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; each test makes its own database."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty job-store database: a SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return request.getfixturevalue("postgres").create_database()
