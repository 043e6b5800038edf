"""`covidct triage --engine ray`: a real Ray (one local node by default; a two-node loopback cluster with a
real PostgreSQL in the integration tests), the weight-free analysis on tiny synthetic studies.

Faults are real: a worker node's processes are killed (`Cluster.remove_node`), the driver process gets
SIGKILL, a worker process exits in the middle of a study. Every study must end in exactly one row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray  # pinned in requirements.lock (extra `scale`): a missing install fails here, never skips
from tests.service.conftest import corrupt_pixels, free_port, wait_for, write_study

from covidct.errors import ServiceError
from covidct.service.predictor import Predictor
from covidct.service.ray_engine import RayRunner, RaySettings, StudyWorker
from covidct.service.store import JobStore
from covidct.service.triage import triage

N_STUDIES = 6
NODE_CPUS = 1
OBJECT_STORE_BYTES = 80 * 1024**2
CRASH_MARK = "crashes-its-worker"
RUN_TIMEOUT_S = 240.0
SLOW_STUDY_S = 2.0


def _archive(root: Path, n: int, first: int = 0, *, corrupt: int | None = None) -> Path:
    for i in range(first, first + n):
        folder = write_study(root, i)
        if i == corrupt:
            corrupt_pixels(folder)
    return root


def _rows(store: JobStore) -> list[Any]:
    return store.list_jobs(sort="created_at")


def _run(archive: Path, db: str, settings: RaySettings, **kw: Any) -> Any:
    store = JobStore(db)
    try:
        runner = RayRunner(settings, checkpoints=[], explain=False, db=db, **kw)
        return triage(archive, Predictor([], explain=False), store, runner=runner)
    finally:
        store.close()


class CrashingWorker(StudyWorker):
    """A worker whose process dies (no exception, no cleanup) on a study whose path carries CRASH_MARK,
    and that takes `SLOW_STUDY_S` longer per study (so that a node can be killed mid-study)."""

    def run(self, job_id: str) -> bool:
        job = self.store.get(job_id)
        if job is not None and CRASH_MARK in job.source_path:
            os._exit(3)
        self.store.set_worker(job_id, self.node, self.device)
        time.sleep(SLOW_STUDY_S)
        return super().run(job_id)


# ---- the fast default test: one local node ---------------------------------------------------------
def test_ray_local_run_records_results_and_worker_db_errors(tmp_path: Path) -> None:
    """Local Ray (one node), SQLite: every study done or failed once with node and device recorded, the
    corrupt one with its covidct message; workers that cannot reach the database stop the run with a
    message naming it. (Re-runs are engine-independent: test_triage.py and the driver-kill test.)"""
    archive = _archive(tmp_path / "archive", 2, first=500, corrupt=501)
    db = str(tmp_path / "w.db")
    settings = RaySettings(actors=1, local_cpus=1)
    try:
        first = _run(archive, db, settings)
        assert (first.total, first.done, first.failed) == (2, 1, 1)
        rows = _rows(JobStore(db))
        assert sorted(r.status for r in rows) == ["done", "failed"]
        assert all(r.node and r.device == "cpu" and r.attempts == 1 for r in rows)
        assert all(r.node.startswith("127.0.0.1/") for r in rows), "Ray bound to a non-loopback address"
        failed = next(r for r in rows if r.status == "failed")
        assert "DICOM" in (failed.error or "") and "study_501" in failed.source_path
        unreachable = f"postgresql://covidct@127.0.0.1:{free_port()}/worklist"  # workers cannot open it
        runner = RayRunner(settings, checkpoints=[], explain=False, db=unreachable)
        message = r"worker could not start on node .*Cannot open the job database"
        with pytest.raises(ServiceError, match=message):
            runner(JobStore(db), [r.id for r in _rows(JobStore(db))], lambda _j, _ok: None)
    finally:
        ray.shutdown()


# ---- bad input: clear messages, nothing started ---------------------------------------------------
def test_unreachable_address_and_sqlite_on_a_cluster_are_refused(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ServiceError, match=r"Cannot reach the Ray cluster at '127.0.0.1:\d+'"):
        RayRunner(RaySettings(address=f"127.0.0.1:{port}"), checkpoints=[], explain=False,
                  db="postgresql://u@127.0.0.1:1/db")
    with pytest.raises(ServiceError, match="SQLite file, which workers on other machines"):
        RayRunner(RaySettings(address=f"ray://127.0.0.1:{port}"), checkpoints=[], explain=False,
                  db=str(tmp_path / "w.db"))
    with pytest.raises(ServiceError, match="Unknown device"):
        RayRunner(RaySettings(device="tpu"), checkpoints=[], explain=False, db=str(tmp_path / "w.db"))


def test_cli_refuses_bad_engine_and_missing_archive(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidct.cli.main import app, load_commands

    load_commands()
    db = str(tmp_path / "a.db")
    res = CliRunner().invoke(app, ["triage", str(tmp_path), "--engine", "spark", "--db", db])
    assert res.exit_code == 2 and "Unknown engine 'spark'" in res.output
    res = CliRunner().invoke(app, ["triage", str(tmp_path / "nope"), "--db", str(tmp_path / "a.db")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["triage", str(tmp_path), "--db", str(tmp_path / "a.db"),
                                   "--address", "auto"])
    assert res.exit_code == 2 and "--engine ray" in res.output


# ---- the integration tests: two nodes on loopback + PostgreSQL ------------------------------------
@pytest.fixture()
def cluster() -> Iterator[Any]:
    """A head and one worker node (1 CPU each, small object stores) started here, shut down after."""
    from ray.cluster_utils import Cluster

    node_args = {"num_cpus": NODE_CPUS, "object_store_memory": OBJECT_STORE_BYTES}
    c = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    c.add_node(**node_args)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _kill_when_running_on(node_id: str, db: str, kill: Callable[[], None],
                          killed: list[str]) -> threading.Thread:
    """Kill (``kill()``) as soon as a study is 'running' on the node whose id starts ``node_id``; the
    ids of the jobs running there go into ``killed``."""
    store = JobStore(db)

    def on_node() -> list[str]:
        return [r.id for r in _rows(store) if r.status == "running" and (r.node or "").endswith(node_id[:12])]

    def watch() -> None:
        wait_for(lambda: bool(on_node()), RUN_TIMEOUT_S, interval=0.05)
        killed.extend(on_node())
        kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.integration
@pytest.mark.slow
def test_worker_node_killed_and_crashing_study(cluster: Any, postgres: Any, tmp_path: Path) -> None:
    """(a) the worker node dies mid-study: its study runs again on the head, every study ends once;
    (c) a corrupt study fails alone with its covidct message; a study that kills its worker process is
    failed after MAX_WORKER_DEATHS deaths with a message, the rest complete."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    archive = _archive(tmp_path / "archive", N_STUDIES, first=600, corrupt=601)
    crash = write_study(tmp_path / "archive", 699)
    crash.rename(crash.with_name(f"study_699_{CRASH_MARK}"))
    db = postgres.create_database()
    worker_node = cluster.list_all_nodes()[1]
    killed: list[str] = []
    watcher = _kill_when_running_on(worker_node.node_id, db,
                                    lambda: cluster.remove_node(worker_node, allow_graceful=False), killed)
    summary = _run(archive, db, RaySettings(address=cluster.address, actors=2), worker=CrashingWorker)
    watcher.join(5)
    rows = _rows(JobStore(db))
    assert len(rows) == N_STUDIES + 1 == summary.total
    assert len({r.job_key for r in rows}) == len(rows)
    by_name = {Path(r.source_path).name: r for r in rows}
    assert "DICOM" in (by_name["study_601"].error or "")
    assert "died 2 times" in (by_name[f"study_699_{CRASH_MARK}"].error or "")
    assert sorted(r.status for r in rows) == ["done"] * (N_STUDIES - 1) + ["failed"] * 2
    assert len(killed) == 1, "the worker node was killed in the middle of a study"
    rerun = next(r for r in rows if r.id == killed[0])
    assert rerun.status == "done" and rerun.attempts == 2, "the study on the killed node ran again"
    assert not rerun.node.endswith(worker_node.node_id[:12]), "... on the node that is left"
    assert summary.done == N_STUDIES - 1 and summary.failed == 2


@pytest.mark.integration
@pytest.mark.slow
def test_driver_killed_and_rerun_resumes(cluster: Any, postgres: Any, tmp_path: Path) -> None:
    """(b) the `covidct triage --engine ray` process is SIGKILLed mid-run; the re-run finishes the rest:
    every study done, one row each."""
    archive = _archive(tmp_path / "archive", N_STUDIES, first=700)
    db = postgres.create_database()
    cmd = [sys.executable, "-m", "covidct.cli.main", "triage", str(archive), "--engine", "ray",
           "--address", cluster.address, "--db", db, "--no-explain", "--actors", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = JobStore(db)  # the tables exist before the driver starts
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(r.status == "done" for r in _rows(store)), RUN_TIMEOUT_S, 0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    at_kill = [r.status for r in _rows(store)]
    assert at_kill.count("done") < N_STUDIES, "the kill should land mid-run"
    time.sleep(1.0)  # let the cluster notice the dead driver and free its actors' CPUs
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rows = _rows(store)
    assert len(rows) == N_STUDIES and {r.status for r in rows} == {"done"}
    assert len({r.job_key for r in rows}) == N_STUDIES

