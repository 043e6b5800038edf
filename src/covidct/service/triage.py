"""Triage an archive into the job store: one job per study found by DICOM identity, idempotent, restartable.

Studies are found by `covidct.io.discovery` (StudyInstanceUID / SeriesInstanceUID from the headers,
however the files are laid out). Each job is keyed by ``<series uid>@<analysis version>``
(`JobStore.add_keyed_job`), so a re-run with the same checkpoints skips done studies, retries failed
ones and re-queues studies a killed run left 'running'; another checkpoint makes new rows. The jobs
are run by a `Runner`: the local `WorkerPool` by default, or Ray (`service/ray_engine.py`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from covidct.io.discovery import DiscoveryStats, Progress, StudyJob, discover
from covidct.service.jobs import OnResult, WorkerPool
from covidct.service.predictor import Predictor, StudyResult
from covidct.service.report import triage_report_dir, write_study_outputs
from covidct.service.store import STATUS_DONE, STATUS_FAILED, STATUS_RUNNING, JobStore, JobView

MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt")
LOCAL_DEVICE = "cpu"

JobDone = Callable[[JobView, bool], None]
"""Called by a runner after each job ends (the job, True when 'done')."""


class Runner(Protocol):
    """Runs the given queued jobs of ``store`` to 'done' or 'failed'; calls ``on_done`` after each."""

    def __call__(self, store: JobStore, job_ids: list[str], on_done: JobDone) -> None: ...


@dataclass
class TriageSummary:
    """What one triage run did."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    requeued_stale: int = 0
    job_ids: list[str] = field(default_factory=list)
    discovery: DiscoveryStats = field(default_factory=DiscoveryStats)


def study_jobs(source: Path, *, staging_dir: Path | None = None, progress: Progress | None = None,
               stats: DiscoveryStats | None = None) -> list[StudyJob]:
    """The studies under ``source``: a folder or zip (discovered by DICOM identity) or a manifest CSV
    whose paths are each discovered; one job per study, duplicates (same key) dropped."""
    source = Path(source)
    stats = stats if stats is not None else DiscoveryStats()
    if source.is_file() and source.name.lower().endswith(MANIFEST_SUFFIXES):
        from covidct.io import read_cohort

        roots = list(dict.fromkeys(Path(r.path).resolve() for r in read_cohort(source)))
    else:
        roots = [source]
    jobs: dict[str, StudyJob] = {}
    for root in roots:
        for job in discover(root, progress=progress, staging_dir=staging_dir, stats=stats):
            jobs.setdefault(job.key, job)
    return list(jobs.values())


def analysis_version(predictor: Predictor) -> str:
    """What a result depends on: model names and checkpoint versions, or the weight-free analysis's."""
    return f"{predictor.model_name}@{predictor.model_version}"


def enqueue(store: JobStore, jobs: Iterable[StudyJob], version: str) -> tuple[list[str], int, int]:
    """Make sure each study has a job for ``version``: new ones queued, failed ones retried, ones a
    killed run left 'running' queued again. Returns (ids to run, already done, re-queued stale)."""
    ids, skipped, stale = [], 0, 0
    for job in jobs:
        view, created = store.add_keyed_job(f"{job.key}@{version}", job.source, series_uid=job.series_uid,
                                            study_uid=job.study_uid, version=version)
        if view.status == STATUS_DONE:
            skipped += 1
            continue
        if view.status == STATUS_FAILED:
            store.requeue(view.id)
        elif view.status == STATUS_RUNNING and not created:
            stale += store.requeue_if_running(view.id)
        ids.append(view.id)
    return ids, skipped, stale


def report_writer(report_dir: Path | None) -> OnResult | None:
    """The `on_result` hook that writes each study's HTML/JSON report into ``report_dir``."""
    if report_dir is None:
        return None

    def write(job: JobView, result: Any) -> None:
        if isinstance(result, StudyResult):
            write_study_outputs(result, triage_report_dir(Path(report_dir), job.source_path, job.id))

    return write


def local_runner(predictor: Predictor, *, report_dir: Path | None = None) -> Runner:
    """The default runner: a `WorkerPool` draining the jobs in this process."""
    where = (socket.gethostname(), str(getattr(predictor, "device", LOCAL_DEVICE)))

    def run(store: JobStore, job_ids: list[str], on_done: JobDone) -> None:
        WorkerPool(store, predictor, on_result=report_writer(report_dir), where=where).drain(
            only_ids=set(job_ids), progress=on_done)

    return run


def triage(source: Path, predictor: Predictor, store: JobStore, *, report_dir: Path | None = None,
           progress: Callable[[int, int, JobView | None], None] | None = None,
           runner: Runner | None = None, staging_dir: Path | None = None,
           discovery_progress: Progress | None = None) -> TriageSummary:
    """Analyse every study under ``source`` not yet done for this predictor; returns counts.

    ``progress(done, total, job)``; ``runner``: default `local_runner`; ``staging_dir``: where zips
    found inside zips are kept for their jobs; ``discovery_progress``: called during the walk.
    """
    summary = TriageSummary()
    jobs = study_jobs(source, staging_dir=staging_dir, progress=discovery_progress, stats=summary.discovery)
    summary.total = len(jobs)
    version = analysis_version(predictor)
    summary.job_ids, summary.skipped, summary.requeued_stale = enqueue(store, jobs, version)
    finished = summary.skipped
    if progress:
        progress(finished, summary.total, None)

    def count(job: JobView, ok: bool) -> None:
        nonlocal finished
        summary.done += ok
        summary.failed += not ok
        finished += 1
        if progress:
            progress(finished, summary.total, job)

    if summary.job_ids:
        (runner or local_runner(predictor, report_dir=report_dir))(store, summary.job_ids, count)
    return summary
