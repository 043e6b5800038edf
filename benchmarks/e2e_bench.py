"""End-to-end benchmark of the service on CPU.

1. One real 148-slice study (../shared/data/covid-ct-md/COVID-19/P001, JPEG-Lossless DICOM) from DICOM
   to a stored result with covidnet-ct2-s at 512 px + Grad-CAM on the key slices, broken down into
   read, preprocess, model, explain, quantify, report and store, three ways: cold (a fresh Predictor's
   first study, as a one-shot `covidct predict`), warmed (a fresh Predictor after `warm_up()`, as the
   server, the DICOM node and the Ray workers start) and steady (that
   Predictor's next study, then 3 more: their totals); resident memory after them and at peak; and the
   quantitative stage alone. The model is UNTRAINED (timing only; weights do not change the cost).
2. API throughput: a real `covidct serve` subprocess, 1, 4 and 16 concurrent clients each uploading
   small synthetic DICOM studies (zip), timed until every job is done.

3. Issue 13: the same study through today's path (``--paths``: per-slice preprocessing and the
   PyTorch backend, kept callable here by `legacy_path`, every slice scored) and the new one
   (whole-stack preprocessing, the backend chosen per model, lung slices only; both share one
   quantitative analysis per study with the explanation since issue 21), alternating, ``--repeats`` times;
   wall and process CPU seconds, the Grad-CAM time on the key slices alone, and the new/old ratio.
   The machine is shared, so CPU seconds are reported beside wall seconds.
4. Triage throughput (``--triage``): the real shared studies split over 1 and 2 worker processes
   (2 cores shared between them), studies per minute and peak memory (RSS) per worker.

Writes benchmarks/out/e2e_bench.json. Usage: python benchmarks/e2e_bench.py [--skip-api] [--studies N]
[--paths] [--triage] [--threads 2] [--repeats 3]
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
TARGET_S = 5.0
QUANT_TARGET_S = 1.0
STEADY_MORE = 3
"""Studies timed after the steady one (their totals only): the spread of a serving process."""


def make_checkpoint(path: Path, size: int) -> Path:
    import torch

    from covidct.models import create_model, save_checkpoint
    from covidct.preprocessing import get_recipe

    torch.manual_seed(0)
    recipe = get_recipe("covidnet-ct2", size=size).to_dict()
    save_checkpoint(path, create_model("covidnet-ct2-s"), recipe=recipe,
                    provenance={"data": "untrained (benchmark timing only)", "code_version": "bench"})
    return path


def _stored_result(predictor: Any, store: Any, tmp: Path, name: str) -> dict[str, Any]:
    """One DICOM -> stored result (predict, report files, store): wall, process CPU and stages."""
    from covidct.service.report import write_study_report

    job_id = store.add_job(STUDY)
    start, cpu = time.perf_counter(), time.process_time()
    result = predictor.predict(STUDY)
    t0 = time.perf_counter()
    write_study_report(result.to_dict(), result.overlays, tmp / name)
    report_files_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.complete(job_id, result.to_dict())
    store_s = time.perf_counter() - t0
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    timings = dict(result.timings)
    timings["report"] = round(timings["report"] + report_files_s, 3)
    timings["store"] = round(store_s, 3)
    return {"dicom_to_stored_result_s": round(total, 2), "process_cpu_s": round(cpu, 2),
            "stages_s": timings, "explain": result.to_dict()["has_heatmap"],
            "num_slices": result.num_slices, "warnings": result.warnings}


def _quant_alone(repeats: int = 3) -> list[float]:
    """The quantitative stage alone (`quantify_study` on the read volume), seconds per run."""
    from covidct.io import read_volume
    from covidct.service.quantitative import quantify_study

    volume = read_volume(STUDY)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        quantify_study(volume)
        runs.append(round(time.perf_counter() - start, 3))
    return runs


def _retain_freed_memory() -> bool:
    """`retain_freed_memory()`, as covidct predict, serve, dicom-listen and the Ray workers call it; False
    on a covidct from before it existed (the before/after comparisons run this script on older trees)."""
    try:
        from covidct.service.memory import retain_freed_memory
    except ImportError:
        return False
    return retain_freed_memory()


def _rss_mb() -> float | None:
    """Resident memory of this process now, MB (Linux), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
    except (OSError, ValueError):
        return None


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (ru_maxrss is KiB on Linux)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench_single_study(tmp: Path) -> dict[str, Any]:
    """DICOM -> stored result for one real study, three ways: ``cold`` (a fresh Predictor, its first
    study: a one-shot `covidct predict`), ``warmed`` (a fresh Predictor after `warm_up()`, as
    `covidct serve`, `dicom-listen` and the Ray workers start) and
    ``steady`` (the same Predictor's next study; ``steady_more_s``: the totals of `STEADY_MORE` more);
    and the quantitative stage alone. The process keeps freed memory (`retain_freed_memory`), as
    every covidct command that analyses studies does. Stage seconds: quantify runs beside preprocess
    (threads), so the stages add up to more than the wall total."""
    import torch

    from covidct.service.predictor import Predictor
    from covidct.service.store import JobStore

    torch.set_num_threads(os.cpu_count() or 1)
    retained = _retain_freed_memory()
    ckpt = make_checkpoint(tmp / "full.ckpt", FULL_SIZE)
    store = JobStore(tmp / "bench.db")
    cold = _stored_result(Predictor([ckpt]), store, tmp, "cold")
    predictor = Predictor([ckpt])
    t0 = time.perf_counter()
    predictor.warm_up()
    warm_up_s = round(time.perf_counter() - t0, 2)
    warmed = _stored_result(predictor, store, tmp, "warmed")
    steady = _stored_result(predictor, store, tmp, "steady")
    more = [_stored_result(predictor, store, tmp, f"steady{k}")["dicom_to_stored_result_s"]
            for k in range(STEADY_MORE)]
    rss_mb = _rss_mb()
    quant = _quant_alone()
    return {"study": str(STUDY.relative_to(SHARED)), "num_slices": cold["num_slices"],
            "model": "covidnet-ct2-s", "input_size": FULL_SIZE, "weights": "untrained (timing only)",
            "explain": cold["explain"], "cold": cold, "warm_up_s": warm_up_s, "warmed": warmed,
            "steady": steady, "steady_more_s": more, "retain_freed_memory": retained,
            "rss_after_mb": rss_mb, "peak_rss_mb": _peak_rss_mb(),
            "quant_alone_s": quant, "quant_alone_median_s": sorted(quant)[1],
            "target_s": TARGET_S, "quant_target_s": QUANT_TARGET_S,
            "load_average": os.getloadavg()}


@contextmanager
def legacy_path() -> Iterator[None]:
    """Today's (pre issue 13) CT-2 preprocessing: one body box and one `prepare_image` per slice,
    each resized as 3 channels, then stacked and copied (every slice, one thread)."""
    import numpy as np

    from covidct.preprocessing.geometry import Prepared, slicewise
    from covidct.preprocessing.recipes import CovidNetCT2Recipe
    from covidct.preprocessing.transforms import CropToBox, union_box

    def prepare_volume(self: Any, volume: Any, *, rng: Any = None, slices: Any = None) -> Any:
        grey = self.to_uint8(np.asarray(volume.array, dtype=np.float32), is_hu=volume.is_hu)
        boxes = [self.body_box(self.focus(s)) for s in grey]
        if self.box_mode == "volume":
            boxes = [union_box(boxes)] * len(boxes)
        boxes = [CropToBox.clip(b, grey.shape[1:]) for b in boxes]
        array = np.stack([self.prepare_image(s, is_hu=False, box=b, rng=rng)
                          for s, b in zip(grey, boxes, strict=True)]).astype(np.float32)
        shape = (len(grey), self.size, self.size)
        return Prepared(array, slicewise(grey.shape, shape, range(len(grey)), boxes))

    saved = CovidNetCT2Recipe.prepare_volume
    CovidNetCT2Recipe.prepare_volume = prepare_volume
    try:
        yield
    finally:
        CovidNetCT2Recipe.prepare_volume = saved


def _run_study(predictor: Any, volume: Any) -> dict[str, Any]:
    """One Predictor.predict on an already-read volume: wall and process-CPU seconds, stages."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = predictor.predict(volume)
    return {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "stages_s": dict(result.timings), "key_slices": list(result.key_slices),
            "covid_probability": result.covid_probability}


def _gradcam_key_slices(ckpt: Any, volume: Any, keys: list[int]) -> dict[str, float]:
    """Grad-CAM on the key slices alone (no lung segmentation), after a prediction."""
    from covidct.explain import explain
    from covidct.models.inference import predict_volume

    prediction = predict_volume(ckpt, volume, backend="auto")
    cpu, wall = time.process_time(), time.perf_counter()
    explain(ckpt, volume, method="gradcam", slices=keys, sanity=False, lungs=False, prediction=prediction)
    return {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "slices": len(keys)}


def bench_paths(tmp: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Today's path vs the new one on the real study, alternating; medians and ratios."""
    import statistics

    import torch

    from covidct.io import read_volume
    from covidct.models import load_checkpoint
    from covidct.models.backends import choose_backend
    from covidct.service.predictor import Predictor

    torch.set_num_threads(threads)
    ckpt_path = make_checkpoint(tmp / "paths.ckpt", FULL_SIZE)
    volume = read_volume(STUDY)
    old = Predictor([ckpt_path], backend="torch", lung_slices=False)
    new = Predictor([ckpt_path], backend="auto")
    # export + backend timing, once, outside the timed runs
    chosen = choose_backend(new.models[0].checkpoint.model, (3, FULL_SIZE, FULL_SIZE), "auto")
    runs: dict[str, list[dict[str, Any]]] = {"today": [], "new": []}
    for _ in range(repeats):
        with legacy_path():
            runs["today"].append(_run_study(old, volume))
        runs["new"].append(_run_study(new, volume))
        print(runs["today"][-1], runs["new"][-1], flush=True)
    median = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "cpu_s")}
              for k, v in runs.items()}
    stages = {k: {s: statistics.median(r["stages_s"].get(s, 0.0) for r in v) for s in v[0]["stages_s"]}
              for k, v in runs.items()}
    gradcam = [_gradcam_key_slices(load_checkpoint(ckpt_path), volume, runs["new"][-1]["key_slices"])
               for _ in range(repeats)]
    return {
        "study": str(STUDY.relative_to(SHARED)), "num_slices": volume.num_slices, "model": "covidnet-ct2-s",
        "input_size": FULL_SIZE, "weights": "untrained (timing only)", "threads": threads,
        "repeats": repeats, "backend_chosen": chosen.name, "median": median, "median_stages_s": stages,
        "speedup_wall": round(median["today"]["wall_s"] / median["new"]["wall_s"], 2),
        "speedup_cpu": round(median["today"]["cpu_s"] / median["new"]["cpu_s"], 2),
        "gradcam_key_slices": {m: statistics.median(g[m] for g in gradcam) for m in ("wall_s", "cpu_s")},
        "runs": runs, "load_average": os.getloadavg(),
    }


TRIAGE_STUDIES = ("covid-ct-md/COVID-19/P001", "covid-ct-md/CAP/cap001", "covid-ct-md/Normal/normal001",
                  "lidc-idri-small/LIDC-IDRI-0001", "lidc-idri-small/LIDC-IDRI-0002",
                  "lidc-idri-small/LIDC-IDRI-0003")


def _triage_worker(args: tuple[str, list[str], int]) -> dict[str, Any]:
    """One worker process: a Predictor (backend auto, Grad-CAM on) over its share of the studies."""
    import resource

    import torch

    from covidct.service.predictor import Predictor

    ckpt, studies, threads = args
    torch.set_num_threads(threads)
    predictor = Predictor([ckpt], backend="auto")
    start = time.perf_counter()
    for study in studies:
        predictor.predict(SHARED / study)
    return {"studies": len(studies), "wall_s": round(time.perf_counter() - start, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def bench_triage(tmp: Path, cores: int, n_studies: int) -> list[dict[str, Any]]:
    """Studies per minute over the first ``n_studies`` shared real studies, 1 and 2 worker processes."""
    import multiprocessing as mp

    studies = TRIAGE_STUDIES[:n_studies]
    ckpt = str(make_checkpoint(tmp / "triage.ckpt", FULL_SIZE))
    _triage_worker((ckpt, [], 1))  # export + backend timing once, outside the timed runs
    rows = []
    for workers in (1, 2):
        shares = [list(studies[i::workers]) for i in range(workers)]
        threads = max(1, cores // workers)
        start = time.perf_counter()
        with mp.get_context("spawn").Pool(workers) as pool:
            done = pool.map(_triage_worker, [(ckpt, share, threads) for share in shares])
        elapsed = time.perf_counter() - start
        rows.append({"workers": workers, "threads_per_worker": threads, "studies": list(studies),
                     "wall_s": round(elapsed, 1),
                     "studies_per_min": round(60 * len(studies) / elapsed, 2),
                     "per_worker": done, "load_average": os.getloadavg()})
        print(rows[-1], flush=True)
    return rows


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
    parser.add_argument("--paths", action="store_true", help="today's path vs the new one (issue 13)")
    parser.add_argument("--triage", action="store_true", help="triage throughput, 1 and 2 workers")
    parser.add_argument("--threads", type=int, default=2, help="cores for --paths / --triage")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--triage-studies", type=int, default=len(TRIAGE_STUDIES))
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU, Python {platform.python_version()}"
    out: dict[str, Any] = {"machine": machine,
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.paths:
            out["paths"] = bench_paths(tmp, args.threads, args.repeats)
            print(json.dumps({k: v for k, v in out["paths"].items() if k != "runs"}, indent=1), flush=True)
        if args.triage:
            out["triage"] = bench_triage(tmp, args.threads, args.triage_studies)
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
