"""Running queued jobs: one function shared by the server's worker pool and `covidct triage`."""

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
from covidct.service.predictor import Predictor, StudyResult
from covidct.service.store import JobStore, JobView

log = logging.getLogger("covidct.service")

VOLUME_FILE = "volume.npy"
HEATMAP_FILE = "heatmap.npy"
LESIONS_FILE = "lesions.npy"
HEAT_LEVELS = 255
IDLE_POLL_S = 0.5


def save_arrays(result: StudyResult, job_dir: Path) -> None:
    """Keep the volume (int16 HU or uint8 grey), heatmap (uint8) and quantitative-CT lesion labels
    (uint8) for the viewer's slice images."""
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


def run_job(store: JobStore, predictor: Predictor, job: JobView, *, job_dir: Path | None = None,
            on_result: Callable[[JobView, StudyResult], None] | None = None) -> bool:
    """Analyse one claimed job and commit 'done' with its result, or 'failed' with the message."""
    try:
        result = predictor.predict(job.source_path)
        if job_dir is not None:
            save_arrays(result, job_dir)
        if on_result is not None:
            on_result(job, result)
        store.complete(job.id, result.to_dict())
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
    """Threads that take queued jobs from the store until stopped. `notify()` wakes them at once."""

    def __init__(self, store: JobStore, predictor: Predictor, data_dir: Path, workers: int = 1) -> None:
        self.store = store
        self.predictor = predictor
        self.data_dir = data_dir
        self.n_workers = max(1, workers)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.n_workers):
            t = threading.Thread(target=self._loop, name=f"covidct-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)

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
            run_job(self.store, self.predictor, job, job_dir=self.data_dir / "jobs" / job.id)

    def status(self) -> dict[str, Any]:
        return {"workers": self.n_workers, "alive": sum(t.is_alive() for t in self._threads)}
