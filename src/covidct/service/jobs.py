"""The one job runner: a `JobStore` queue and the `WorkerPool` that works it.

The REST API (uploads), `covidct triage` (a folder of studies) and the DICOM node (complete series)
all enqueue jobs into a `JobStore` and let a `WorkerPool` run them: in worker threads (`start`), or
in the calling thread until the queue is empty (`drain`, for triage). A job's study is on disk before
it is queued, so a killed process loses nothing: `requeue_stale` puts its running jobs back.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from covidct.errors import CovidCTError
from covidct.io.volume import Volume
from covidct.service.masks import write_study_masks
from covidct.service.predictor import Predictor, StudyResult
from covidct.service.store import STATUS_DONE, STATUS_FAILED, JobStore, JobView

log = logging.getLogger("covidct.service")

VOLUME_FILE = "volume.npy"
HEATMAP_FILE = "heatmap.npy"
LESIONS_FILE = "lesions.npy"
MASKS_DIR = "masks"
"""Job subfolder of the quantitative CT's masks (NIfTI, `covidct.io.masks.SEG_FILE`)."""
HEAT_LEVELS = 255
IDLE_POLL_S = 0.5
UNIT_SPACING = (1.0, 1.0, 1.0)
"""Spacing of a `Volume` wrapped around kept arrays only to draw them (no geometry is used)."""

Analyse = Callable[[Path], Any]
"""Study path -> result: `Predictor.predict`, or any callable returning a `StudyResult` or a dict."""
OnResult = Callable[[JobView, Any], None]
"""Called with the job and its result after the analysis and before the job is committed 'done'; an
exception fails the job with its message."""


def save_arrays(result: StudyResult, job_dir: Path) -> None:
    """Keep the volume (int16 HU or uint8 grey), heatmap (uint8) and quantitative-CT lesion labels
    (uint8) for the viewer's slice images, and the masks (NIfTI, DICOM SEG) in ``masks/``."""
    if not isinstance(result, StudyResult):  # a plain dict result carries no arrays
        return
    job_dir.mkdir(parents=True, exist_ok=True)
    vol = result.volume
    if vol is not None:
        dtype = np.int16 if vol.is_hu else np.uint8
        np.save(job_dir / VOLUME_FILE, np.clip(np.rint(vol.array), np.iinfo(dtype).min,
                                               np.iinfo(dtype).max).astype(dtype))
    if result.heatmap is not None:
        np.save(job_dir / HEATMAP_FILE, np.rint(result.heatmap * HEAT_LEVELS).astype(np.uint8))
    if result.lesion_labels is not None:
        np.save(job_dir / LESIONS_FILE, result.lesion_labels.astype(np.uint8))
    write_study_masks(result, job_dir / MASKS_DIR)


def stored_overlays(job_dir: Path, result: dict[str, Any]) -> dict[int, bytes]:
    """PNG key-slice images of a finished job from its kept arrays: lung window with the heatmap
    blended on, or without one the quantitative-CT lesions (the pictures `Predictor` puts in reports)."""
    from covidct.service import images
    from covidct.service.quantitative import lesion_overlay

    if not (job_dir / VOLUME_FILE).is_file():
        return {}
    array = np.load(job_dir / VOLUME_FILE, mmap_mode="r")
    heat = np.load(job_dir / HEATMAP_FILE, mmap_mode="r") if (job_dir / HEATMAP_FILE).is_file() else None
    lesions = np.load(job_dir / LESIONS_FILE, mmap_mode="r") if (job_dir / LESIONS_FILE).is_file() else None
    is_hu = bool(result.get("is_hu", True))
    out: dict[int, bytes] = {}
    for k in result.get("key_slices") or []:
        if not 0 <= int(k) < array.shape[0]:
            continue
        k = int(k)
        if heat is not None:
            grey = images.to_grey(np.asarray(array[k], np.float32), is_hu=is_hu)
            picture = images.blend(grey, np.asarray(heat[k], np.float32) / HEAT_LEVELS)
        elif lesions is not None:
            picture = lesion_overlay(Volume(array=array, spacing=UNIT_SPACING, is_hu=is_hu), lesions, k)
        else:
            picture = images.to_grey(np.asarray(array[k], np.float32), is_hu=is_hu)
        out[k] = images.png_bytes(picture)
    return out


def result_dict(result: Any) -> dict[str, Any]:
    """A JSON-ready dict of a result (`StudyResult.to_dict()`, or a dict without arrays/images)."""
    if hasattr(result, "to_dict"):
        return dict(result.to_dict())
    data = dict(result) if isinstance(result, dict) else dict(vars(result))
    return {k: v for k, v in data.items() if k not in NON_JSON_KEYS}


NON_JSON_KEYS = ("key_images", *StudyResult.NON_JSON)


def _analyse_job(analyse: Predictor | Analyse, job: JobView) -> Any:
    """Run the analysis of one job; a Predictor reads the job's target series (archive triage)."""
    if isinstance(analyse, Predictor):
        return analyse.predict(Path(job.source_path), series_uid=job.target_series_uid)
    return analyse(Path(job.source_path))


def run_job(store: JobStore, analyse: Predictor | Analyse, job: JobView, *, job_dir: Path | None = None,
            on_result: OnResult | None = None, where: tuple[str, str] | None = None) -> bool:
    """Analyse one claimed job and commit 'done' with its result, or 'failed' with the message.
    ``where``: (node, device) recorded on the job first."""
    try:
        if where is not None:
            store.set_worker(job.id, *where)
        result = _analyse_job(analyse, job)
        if job_dir is not None:
            save_arrays(result, job_dir)
        if on_result is not None:
            on_result(job, result)
        data = result_dict(result)
        if job.series_uid and not data.get("series_uid"):
            data["series_uid"] = job.series_uid
        store.complete(job.id, data)
        return True
    except CovidCTError as exc:
        store.fail(job.id, _without_job_dir(str(exc), job_dir))
    except Exception:  # noqa: BLE001 - a worker must survive any one bad study
        log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        store.fail(job.id, internal_error_message(job.id))
    return False


def _without_job_dir(message: str, job_dir: Path | None) -> str:
    """The message with the server's job folder left out of file paths (``upload/IM0012.dcm``)."""
    if job_dir is None:
        return message
    return message.replace(f"{job_dir.resolve()}{os.sep}", "").replace(f"{job_dir}{os.sep}", "")


def internal_error_message(job_id: str) -> str:
    """What a failed job stores for an unexpected error: no Python exception text (it may hold paths or
    internals); the traceback is in the server log under the job id."""
    return (f"Internal error while analysing this study (not a known input problem); the server log "
            f"has the details under job {job_id}. Report it to the administrator.")


class WorkerPool:
    """Runs queued jobs of a `JobStore`: worker threads (`start` / `notify` / `stop`) or the calling
    thread (`drain`). ``data_dir``: where each job keeps the viewer's arrays (``jobs/<id>/``; None:
    not kept). ``on_result``: see `OnResult` (the DICOM node sends its SR there, triage writes reports).
    ``where``: (node, device) recorded on each job it runs.
    """

    def __init__(self, store: JobStore, analyse: Predictor | Analyse, data_dir: Path | None = None,
                 workers: int = 1, *, on_result: OnResult | None = None,
                 where: tuple[str, str] | None = None) -> None:
        self.where = where
        self.store = store
        self.analyse = analyse
        self.data_dir = data_dir
        self.on_result = on_result
        self.n_workers = max(1, workers)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- enqueueing ----------------------------------------------------------
    def submit(self, source_path: str | Path, *, series_uid: str | None = None,
               job_id: str | None = None) -> str:
        """Queue a study already on disk and wake a worker; returns the job id."""
        job_id = self.store.add_job(source_path, series_uid=series_uid, job_id=job_id)
        self.notify()
        return job_id

    def resubmit(self, job_id: str) -> None:
        """Queue an existing job again (its study changed or it failed) and wake a worker."""
        self.store.requeue(job_id)
        self.notify()

    # ---- running -------------------------------------------------------------
    def start(self) -> WorkerPool:
        """Start the worker threads (jobs a killed process left running are queued again first)."""
        self.store.requeue_stale()
        self._stop.clear()
        for i in range(self.n_workers):
            t = threading.Thread(target=self._loop, name=f"covidct-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def run_one(self, job: JobView) -> bool:
        """Run one claimed job; True when it ended 'done'."""
        job_dir = None if self.data_dir is None else self.data_dir / "jobs" / job.id
        return run_job(self.store, self.analyse, job, job_dir=job_dir, on_result=self.on_result,
                       where=self.where)

    def drain(self, only_ids: set[str] | None = None,
              progress: Callable[[JobView, bool], None] | None = None) -> dict[str, int]:
        """Run queued jobs (only ``only_ids`` when given) in this thread until none is left;
        returns ``{"done": n, "failed": m}``. ``progress(job, ok)`` after each."""
        counts = {STATUS_DONE: 0, STATUS_FAILED: 0}
        while (job := self.store.claim_next(only_ids=only_ids)) is not None:
            ok = self.run_one(job)
            counts[STATUS_DONE if ok else STATUS_FAILED] += 1
            if progress is not None:
                progress(job, ok)
        return counts

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_next()
            except Exception:  # noqa: BLE001 - database busy: retry after a pause
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            self.run_one(job)

    def status(self) -> dict[str, Any]:
        return {"workers": self.n_workers, "alive": sum(t.is_alive() for t in self._threads)}
