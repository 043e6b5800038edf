"""Archive triage side by side in one run: local WorkerPool (1 and 2 processes) vs Ray (1 node with 1
and 2 actors, 2 nodes on this machine), over the same synthetic studies; and the discovery rate.

Every configuration triages the same archive into its own fresh database on one PostgreSQL server
started here (the tests' throw-away server; a cluster needs a database server) with the same analysis
(the weight-free quantitative CT by default, or ``--checkpoint``). Reported per configuration:
studies/min (wall clock including the workers' start), the mean analysis time per study inside the
worker (`StudyResult.timings["total"]`), the overhead per study = wall x parallel workers / studies -
analysis (worker start, reading the job, database commits, Ray scheduling), and each worker's peak
resident memory. Two local processes drain one queue (claims in the database).

Discovery: ``--discovery-series`` tiny series (2 slices of 16x16 each, written by covidct's own writer)
in a nested tree, then `covidct.io.discovery.discover` over it: headers/s and the walk's memory.

Overhead: the same machinery with a no-op analysis (``--overhead-jobs``): local runner vs Ray (1 node,
1 actor), milliseconds per job (claim, node record, commit; Ray adds dispatch and the result's return).

Run: .venv/bin/python benchmarks/scale_bench.py [--studies 8] [--shape 40 192 192]
     [--discovery-series 2000] [--overhead-jobs 200] [--skip local|ray|overhead|discovery] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Ray nodes of this one-machine benchmark bind to 127.0.0.1 (read by ray at import; see
# covidct.service.ray_engine.RAY_LOOPBACK_ENV).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

KIB_PER_MIB = 1024
DEFAULT_STUDIES = 8
DEFAULT_SHAPE = (32, 160, 160)
STUDY_SPACING = (5.0, 1.5, 1.5)
DISCOVERY_SERIES = 2000
DISCOVERY_SHAPE = (2, 16, 16)
SERIES_PER_FOLDER = 50
OVERHEAD_JOBS = 200
NODE_OBJECT_STORE_BYTES = 80 * 1024**2
LABELS = ("COVID-19", "Normal", "Pneumonia")
RAY_CONFIGS = (("Ray, 1 node, 1 actor", 1, 1), ("Ray, 1 node, 2 actors", 1, 2),
               ("Ray, 2 nodes on this machine, 1 actor each", 2, 2))
REPO = Path(__file__).resolve().parents[1]


def start_postgres() -> Any:
    """The tests' throw-away PostgreSQL (initdb + pg_ctl on a free loopback port, stopped by PID):
    every configuration writes its worklist to a database of it, as a cluster would."""
    sys.path.insert(0, str(REPO))
    from tests.service.conftest import start_postgres as start

    return start()


def write_archive(root: Path, n: int, shape: tuple[int, int, int]) -> Path:
    """``n`` synthetic phantom studies as DICOM series, one folder each."""
    from pydicom.uid import generate_uid

    from covidct import synthetic
    from covidct.io.dicom_write import write_dicom_series

    for i in range(n):
        phantom = synthetic.make_phantom(LABELS[i % 3], shape=shape, spacing=STUDY_SPACING, seed=i)
        write_dicom_series(phantom.volume, root / f"study_{i:03d}", seed=i,
                           study_uid=generate_uid(entropy_srcs=[f"bench-study-{i}"]),
                           series_uid=generate_uid(entropy_srcs=[f"bench-series-{i}"]))
    return root


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB


def _analysis_seconds(db: str) -> list[float]:
    from covidct.service.store import JobStore

    store = JobStore(db)
    try:
        return [float((j.result or {}).get("timings", {}).get("total", 0.0)) for j in store.list_jobs()
                if j.status == "done"]
    finally:
        store.close()


def _local_worker(args: tuple[str, list[str], list[str]]) -> dict[str, Any]:
    """One local worker process: the local runner (`WorkerPool.drain`) over the shared queue."""
    db, ids, checkpoints = args
    from covidct.service.predictor import Predictor
    from covidct.service.store import JobStore
    from covidct.service.triage import local_runner

    store = JobStore(db)
    counts = {"done": 0, "failed": 0}

    def count(_job: Any, ok: bool) -> None:
        counts["done" if ok else "failed"] += 1

    runner = local_runner(Predictor(checkpoints, explain=False))
    ready = time.time()
    runner(store, ids, count)
    store.close()
    return {**counts, "peak_rss_mib": round(_peak_rss_mib(), 1), "ready_at": ready}


def bench_local(archive: Path, db: str, processes: int, checkpoints: list[str]) -> dict[str, Any]:
    """Discover + enqueue here, then ``processes`` spawned workers drain the one queue (claims in the
    database). Wall clock includes each worker's start (imports, Predictor), like Ray's actors."""
    ids = _enqueue(archive, db, checkpoints)
    start, start_epoch = time.perf_counter(), time.time()
    with mp.get_context("spawn").Pool(processes) as pool:
        workers = pool.map(_local_worker, [(db, ids, checkpoints)] * processes)
    wall = time.perf_counter() - start
    startup = min(w["ready_at"] for w in workers) - start_epoch
    return _row(f"local WorkerPool, {processes} process(es)", processes, wall, startup, db,
                [w["peak_rss_mib"] for w in workers], sum(w["done"] for w in workers))


def bench_ray(archive: Path, db: str, label: str, nodes: int, actors: int,
              checkpoints: list[str]) -> dict[str, Any]:
    """A `Cluster` of ``nodes`` raylets on this machine and the archive discovered and queued before the
    clock, as for the local runs; then the Ray runner over the queue (actors' start included)."""
    import ray
    from ray.cluster_utils import Cluster

    from covidct.service.ray_engine import RayRunner, RaySettings

    ids = _enqueue(archive, db, checkpoints)
    cpus_per_node = max(1, actors // nodes)
    head = {"num_cpus": cpus_per_node, "include_dashboard": False,
            "object_store_memory": NODE_OBJECT_STORE_BYTES}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus_per_node, object_store_memory=NODE_OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    try:
        from covidct.service.store import JobStore

        runner = RayRunner(RaySettings(address=cluster.address, actors=actors), checkpoints=checkpoints,
                           explain=False, db=db)
        store = JobStore(db)
        done = []
        start = time.perf_counter()
        runner(store, ids, lambda _job, ok: done.append(ok))
        wall = time.perf_counter() - start
        store.close()
        peaks = [w["peak_rss_mib"] for w in runner.worker_stats]
        row = _row(label, actors, wall, runner.startup_s, db, peaks, sum(done))
        row["studies_per_node"] = dict(runner.nodes)
        return row
    finally:
        ray.shutdown()
        cluster.shutdown()


def _enqueue(archive: Path, db: str, checkpoints: list[str]) -> list[str]:
    """Discover the archive and queue its jobs (not timed: the same for every configuration)."""
    from covidct.service.predictor import Predictor
    from covidct.service.store import JobStore
    from covidct.service.triage import analysis_version, enqueue, study_jobs

    store = JobStore(db)
    ids, _, _ = enqueue(store, study_jobs(archive), analysis_version(Predictor(checkpoints, explain=False)))
    store.close()
    return ids


def _noop_analysis(_path: Path) -> dict[str, Any]:
    return {"predicted_class": None}


def bench_overhead(postgres: Any, n_jobs: int) -> list[dict[str, Any]]:
    """Per-study cost of the machinery alone (claim, node/device record, commit; Ray: + dispatch and
    result) with a no-op analysis: the local runner vs Ray on one node with one actor."""
    import ray
    from ray.cluster_utils import Cluster

    from covidct.service.jobs import run_job
    from covidct.service.ray_engine import RayRunner, RaySettings, StudyWorker
    from covidct.service.store import JobStore
    from covidct.service.triage import local_runner

    class Noop(StudyWorker):
        def run(self, job_id: str) -> bool:
            job = self.store.get(job_id)
            return run_job(self.store, _noop_analysis, job, where=(self.node, self.device))

    def jobs(db: str) -> list[str]:
        store = JobStore(db)
        ids = [store.add_keyed_job(f"noop-{i}@bench", "/nonexistent", series_uid=None, study_uid=None,
                                   version="bench")[0].id for i in range(n_jobs)]
        store.close()
        return ids

    rows = []
    db = postgres.create_database()
    ids, store = jobs(db), JobStore(db)
    start = time.perf_counter()
    local_runner(_noop_analysis)(store, ids, lambda _j, _ok: None)  # type: ignore[arg-type]
    rows.append({"config": "local runner, no-op analysis", "jobs": n_jobs,
                 "ms_per_job": round(1000 * (time.perf_counter() - start) / n_jobs, 2)})
    store.close()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": NODE_OBJECT_STORE_BYTES})
    try:
        db = postgres.create_database()
        ids, store = jobs(db), JobStore(db)
        runner = RayRunner(RaySettings(address=cluster.address, actors=1), checkpoints=[], explain=False,
                           db=db, worker=Noop)
        start = time.perf_counter()
        runner(store, ids, lambda _j, _ok: None)
        wall = time.perf_counter() - start - runner.startup_s
        rows.append({"config": "Ray 1 node 1 actor, no-op analysis (actor start excluded)", "jobs": n_jobs,
                     "ms_per_job": round(1000 * wall / n_jobs, 2),
                     "actor_start_s": round(runner.startup_s, 2)})
        store.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return rows


def _row(label: str, parallel: int, wall: float, startup: float, db: str, peaks: list[float],
         done: int) -> dict[str, Any]:
    """Studies/min over the whole wall clock and after the first worker was ready (steady state);
    overhead per study = steady wall x workers / studies - mean analysis time."""
    analysis = _analysis_seconds(db)
    mean = sum(analysis) / len(analysis) if analysis else float("nan")
    steady = max(wall - startup, 1e-9)
    return {"config": label, "parallel_workers": parallel, "studies_done": done, "wall_s": round(wall, 2),
            "worker_start_s": round(startup, 2), "studies_per_min": round(60 * done / wall, 2),
            "studies_per_min_after_start": round(60 * done / steady, 2),
            "analysis_s_per_study": round(mean, 3),
            "overhead_s_per_study": round(steady * parallel / max(done, 1) - mean, 3),
            "peak_rss_mib_per_worker": peaks}


def bench_discovery(tmp: Path, n_series: int) -> dict[str, Any]:
    """Write ``n_series`` tiny series in a nested tree, then time and measure one discovery walk."""
    import numpy as np
    from pydicom.uid import generate_uid

    from covidct.io.dicom_write import write_dicom_series
    from covidct.io.volume import Volume, VolumeMetadata

    root = tmp / "tree"
    array = np.full(DISCOVERY_SHAPE, -700, np.float32)
    volume = Volume(array=array, spacing=(5.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3),
                    is_hu=True, meta=VolumeMetadata(source="synthetic"))
    start = time.perf_counter()
    for i in range(n_series):
        folder = root / f"batch_{i // SERIES_PER_FOLDER:03d}" / f"patient_{i:05d}"
        write_dicom_series(volume, folder, seed=i, study_uid=generate_uid(entropy_srcs=[f"d-{i}"]),
                           series_uid=generate_uid(entropy_srcs=[f"ds-{i}"]))
        (folder / "notes.txt").write_text("side file")
    written = time.perf_counter() - start
    with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: its peak RSS is the walk's
        walk = pool.apply(_discovery_worker, (str(root),))
    return {"series": n_series, "write_s": round(written, 1), **walk,
            "note": "files just written (in the page cache); one process"}


def _discovery_worker(root: str) -> dict[str, Any]:
    from covidct.io.discovery import DiscoveryStats, discover

    stats = DiscoveryStats()
    before = _peak_rss_mib()
    start = time.perf_counter()
    jobs = sum(1 for _ in discover(root, stats=stats))
    elapsed = time.perf_counter() - start
    return {"files": stats.files, "dicom_headers": stats.headers, "side_files": stats.side_files,
            "jobs": jobs, "discovery_s": round(elapsed, 2),
            "headers_per_s": round(stats.headers / elapsed, 1),
            "peak_rss_mib_before_walk": round(before, 1),
            "peak_rss_mib_after_walk": round(_peak_rss_mib(), 1)}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=DEFAULT_STUDIES)
    parser.add_argument("--shape", type=int, nargs=3, default=DEFAULT_SHAPE)
    parser.add_argument("--checkpoint", action="append", default=[], help="default: weight-free analysis")
    parser.add_argument("--discovery-series", type=int, default=DISCOVERY_SERIES)
    parser.add_argument("--skip", action="append", default=[],
                        choices=["local", "ray", "overhead", "discovery"])
    parser.add_argument("--overhead-jobs", type=int, default=OVERHEAD_JOBS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out: dict[str, Any] = {"machine": machine(), "studies": args.studies, "shape": args.shape,
                           "analysis": "checkpoints " + ", ".join(args.checkpoint) if args.checkpoint
                           else "weight-free quantitative CT (no explain)", "triage": []}
    with tempfile.TemporaryDirectory(prefix="covidct-scale-bench-") as name:
        tmp = Path(name)
        archive = write_archive(tmp / "archive", args.studies, tuple(args.shape))
        postgres = start_postgres() if {"local", "ray", "overhead"} - set(args.skip) else None
        try:
            if "local" not in args.skip:
                for processes in (1, 2):
                    row = bench_local(archive, postgres.create_database(), processes, args.checkpoint)
                    out["triage"].append(row)
                    print(json.dumps(row), flush=True)
            if "overhead" not in args.skip:
                out["overhead"] = bench_overhead(postgres, args.overhead_jobs)
                print(json.dumps(out["overhead"]), flush=True)
            if "ray" not in args.skip:
                for label, nodes, actors in RAY_CONFIGS:
                    db = postgres.create_database()
                    row = bench_ray(archive, db, label, nodes, actors, args.checkpoint)
                    out["triage"].append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if postgres is not None:
                postgres.stop()
        if "discovery" not in args.skip:
            out["discovery"] = bench_discovery(tmp, args.discovery_series)
            print(json.dumps(out["discovery"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
