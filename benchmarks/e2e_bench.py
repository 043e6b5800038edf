"""End-to-end benchmark of the service on CPU.

1. One real 148-slice study (../shared/data/covid-ct-md/COVID-19/P001, JPEG-Lossless DICOM) from DICOM
   to a stored result with covidnet-ct2-s at 512 px, broken down into read, preprocess, model,
   explain, report and store. The model is UNTRAINED (timing only; weights do not change the cost).
2. API throughput: a real `covidct serve` subprocess, 1, 4 and 16 concurrent clients each uploading
   small synthetic DICOM studies (zip), timed until every job is done.

Writes benchmarks/out/e2e_bench.json. Usage: python benchmarks/e2e_bench.py [--skip-api] [--studies N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COVIDCT_SHARED_DATA", ROOT.parent / "shared" / "data"))
STUDY = SHARED / "covid-ct-md" / "COVID-19" / "P001"
OUT = ROOT / "benchmarks" / "out" / "e2e_bench.json"
FULL_SIZE = 512
API_MODEL_SIZE = 64
API_SHAPE = (16, 96, 96)
API_SPACING = (6.0, 1.6, 1.6)
CONCURRENCY = (1, 4, 16)
JOB_TIMEOUT_S = 600.0
TARGET_S = 30.0


def make_checkpoint(path: Path, size: int) -> Path:
    import torch

    from covidct.models import create_model, save_checkpoint
    from covidct.preprocessing import get_recipe

    torch.manual_seed(0)
    recipe = get_recipe("covidnet-ct2", size=size).to_dict()
    save_checkpoint(path, create_model("covidnet-ct2-s"), recipe=recipe,
                    provenance={"data": "untrained (benchmark timing only)", "code_version": "bench"})
    return path


def bench_single_study(tmp: Path) -> dict[str, Any]:
    """DICOM -> stored result for one real study; stage timings in seconds."""
    import torch

    from covidct.service.predictor import Predictor
    from covidct.service.report import write_study_report
    from covidct.service.store import JobStore

    torch.set_num_threads(os.cpu_count() or 1)
    ckpt = make_checkpoint(tmp / "full.ckpt", FULL_SIZE)
    predictor = Predictor([ckpt])
    store = JobStore(tmp / "bench.db")
    job_id = store.add_job(STUDY)
    start = time.perf_counter()
    result = predictor.predict(STUDY)
    t0 = time.perf_counter()
    write_study_report(result.to_dict(), result.overlays, tmp / "report")
    report_files_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.complete(job_id, result.to_dict())
    store_s = time.perf_counter() - t0
    total = time.perf_counter() - start
    timings = dict(result.timings)
    timings["report"] = round(timings["report"] + report_files_s, 3)
    timings["store"] = round(store_s, 3)
    return {"study": str(STUDY.relative_to(SHARED)), "num_slices": result.num_slices,
            "model": "covidnet-ct2-s", "input_size": FULL_SIZE, "weights": "untrained (timing only)",
            "explain": result.to_dict()["has_heatmap"],
            "stages_s": timings, "dicom_to_stored_result_s": round(total, 2), "target_s": TARGET_S,
            "warnings": result.warnings}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_zips(tmp: Path, n: int) -> list[bytes]:
    from pydicom.uid import generate_uid

    from covidct.io.dicom_write import write_dicom_series
    from covidct.synthetic import make_phantom

    zips = []
    for i in range(n):
        vol = make_phantom(("COVID-19", "Normal", "Pneumonia")[i % 3], shape=API_SHAPE, spacing=API_SPACING,
                           seed=1000 + i).volume
        folder = tmp / f"s{i}"
        write_dicom_series(vol, folder, seed=i, series_uid=generate_uid(entropy_srcs=[f"bench-{i}"]),
                           study_uid=generate_uid(entropy_srcs=[f"bench-study-{i}"]))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.iterdir()):
                zf.write(p, p.name)
        zips.append(buf.getvalue())
    return zips


def bench_api(tmp: Path, n_studies: int, workers: int) -> list[dict[str, Any]]:
    """Throughput of `covidct serve` with 1, 4 and 16 concurrent uploading clients."""
    ckpt = make_checkpoint(tmp / "small.ckpt", API_MODEL_SIZE)
    zips = synthetic_zips(tmp, n_studies)
    rows = []
    for clients in CONCURRENCY:
        rows.append(_run_level(tmp, ckpt, zips, clients, workers))
        print(rows[-1], flush=True)
    return rows


def _run_level(tmp: Path, ckpt: Path, zips: list[bytes], clients: int, workers: int) -> dict[str, Any]:
    import httpx

    from covidct.service.store import JobStore

    db, port = tmp / f"api-{clients}.db", free_port()
    store = JobStore(db)
    token = store.create_token("bench")
    cmd = [sys.executable, "-m", "covidct.cli.main", "serve", "--checkpoint", str(ckpt), "--db", str(db),
           "--data-dir", str(tmp / f"data-{clients}"), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []

    def upload(data: bytes) -> None:
        t = time.perf_counter()
        r = httpx.post(f"{url}/studies", files=[("files", ("s.zip", data, "application/zip"))],
                       headers=headers, timeout=300)
        r.raise_for_status()
        latencies.append(time.perf_counter() - t)

    def finished() -> bool:
        counts = store.counts()
        return counts["done"] + counts["failed"] == len(zips)

    try:
        _wait(lambda: _ok(url), 120)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(upload, zips))
        uploaded = time.perf_counter() - start
        _wait(finished, JOB_TIMEOUT_S)
        elapsed = time.perf_counter() - start
        return {"clients": clients, "studies": len(zips), "server_workers": workers,
                "failed": store.counts()["failed"], "all_uploaded_s": round(uploaded, 2),
                "all_done_s": round(elapsed, 2), "studies_per_min": round(60 * len(zips) / elapsed, 1),
                "upload_latency_median_s": round(sorted(latencies)[len(latencies) // 2], 3)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        store.close()


def _ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout} s")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--studies", type=int, default=16, help="synthetic studies per concurrency level")
    parser.add_argument("--workers", type=int, default=2, help="server worker threads")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU, Python {platform.python_version()}"
    out: dict[str, Any] = {"machine": machine,
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_study:
            if STUDY.is_dir():
                out["single_study"] = bench_single_study(tmp)
                print(json.dumps(out["single_study"], indent=1), flush=True)
            else:
                out["single_study"] = {"skipped": f"{STUDY} is absent (a fresh clone has no ../shared)"}
        if not args.skip_api:
            out["api_throughput"] = bench_api(tmp, args.studies, args.workers)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
