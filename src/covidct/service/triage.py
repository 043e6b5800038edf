"""Triage many studies into the job store: idempotent by SeriesInstanceUID, restartable after a kill.

Each study's status is committed as it changes; a re-run skips done studies, retries failed ones and
re-queues studies a killed run left 'running'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from covidct.errors import NoDataError
from covidct.service.jobs import WorkerPool
from covidct.service.predictor import Predictor, StudyResult
from covidct.service.report import study_name, write_study_outputs
from covidct.service.store import STATUS_DONE, STATUS_FAILED, JobStore, JobView

STUDY_FILE_SUFFIXES = (".zip", ".nii", ".nii.gz", ".mha", ".nrrd")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class TriageSummary:
    """What one triage run did."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    requeued_stale: int = 0
    job_ids: list[str] = field(default_factory=list)


def discover_studies(source: Path) -> list[Path]:
    """Study paths under ``source``: a manifest (CSV via covidct.io.read_cohort), one study folder,
    or a folder of study folders / zips / NIfTI files."""
    source = Path(source)
    if source.is_file() and source.name.lower().endswith(MANIFEST_SUFFIXES):
        from covidct.io import read_cohort

        paths = list(dict.fromkeys(Path(r.path).resolve() for r in read_cohort(source)))
    elif source.is_file():
        paths = [source.resolve()]
    elif source.is_dir():
        paths = _study_folders(source)
    else:
        raise NoDataError(f"{str(source)!r} does not exist; give a folder of studies or a manifest CSV.")
    if not paths:
        raise NoDataError(f"No studies found in {str(source)!r}: expected DICOM series folders, zips or "
                          "NIfTI files (one study each), or a manifest CSV.")
    return paths


def _study_folders(root: Path) -> list[Path]:
    studies: list[Path] = []
    for folder in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
        entries = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        study_files = [p for p in entries if p.name.lower().endswith(STUDY_FILE_SUFFIXES)]
        studies += [p.resolve() for p in study_files]
        if len(entries) > len(study_files):
            studies.append(folder.resolve())
    return sorted(set(studies))


def enqueue(store: JobStore, paths: Iterable[Path]) -> tuple[list[str], int]:
    """Make sure each path has a queued/done job; failed ones are retried. Returns (ids, skipped done)."""
    ids, skipped = [], 0
    for path in paths:
        job = store.find_by_source(path)
        if job is None:
            ids.append(store.add_job(path))
            continue
        ids.append(job.id)
        if job.status == STATUS_DONE:
            skipped += 1
        elif job.status == STATUS_FAILED:
            store.requeue(job.id)
    return ids, skipped


def triage(source: Path, predictor: Predictor, store: JobStore, *, report_dir: Path | None = None,
           progress: Callable[[int, int, JobView | None], None] | None = None) -> TriageSummary:
    """Analyse every study under ``source`` not yet done; returns counts. ``progress(done, total, job)``."""
    paths = discover_studies(source)
    summary = TriageSummary(total=len(paths), requeued_stale=store.requeue_stale())
    summary.job_ids, summary.skipped = enqueue(store, paths)
    wanted = set(summary.job_ids)
    finished = summary.skipped
    if progress:
        progress(finished, summary.total, None)

    def write_report(job: JobView, result: StudyResult) -> None:
        if report_dir is not None:
            write_study_outputs(result, report_dir / f"{study_name({}, job.source_path)}_{job.id[:8]}")

    def count(job: JobView, ok: bool) -> None:
        nonlocal finished
        summary.done += ok
        summary.failed += not ok
        finished += 1
        if progress:
            progress(finished, summary.total, job)

    WorkerPool(store, predictor, on_result=write_report).drain(only_ids=wanted, progress=count)
    return summary
