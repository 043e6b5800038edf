"""Discovery by DICOM identity: walk a tree (folders, zips, zips in zips) and make one job per study.

Files are grouped by StudyInstanceUID / SeriesInstanceUID read from their headers (pixels never read),
however they are laid out on disk; inside a study the series-choice rules of `read_volume` pick the
series to analyse. Side files (CSV, TXT, JSON, DICOMDIR, anything not DICOM) are skipped.

The walk keeps one small `_SeriesSummary` per series (counts, the folder holding its files, the fields
the series rules need), never the headers themselves, so a tree of 100,000 studies fits in memory.
Jobs are yielded once the walk is over (a study's files may be anywhere in the tree).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath

from pydicom.dataset import Dataset

from covidct.errors import CovidCTError, NoDataError
from covidct.io.dicom import SliceHeader, choose_series, extract_zip_safely, read_header
from covidct.io.images import is_image
from covidct.io.limits import ReadLimits, is_regular_file
from covidct.io.nifti import is_nifti

SIDE_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".xml", ".md", ".html", ".pdf", ".xlsx", ".ini",
                      ".yaml", ".yml", ".log", ".gif", ".npy", ".py")
"""Never DICOM in practice: skipped without opening them (anything else is opened and checked)."""
SKIPPED_NAMES = ("DICOMDIR",)
ZIP_SUFFIX = ".zip"
PROGRESS_EVERY_S = 1.0
MAX_LISTED_PROBLEMS = 20
NO_UID_KEY = "path:"


@dataclass(frozen=True)
class StudyJob:
    """One study to analyse: read ``source`` (a folder, a zip or a NIfTI file) with ``series_uid``.

    ``key`` identifies the series (its SeriesInstanceUID; ``path:<source>`` when there is none).
    """

    key: str
    source: Path
    series_uid: str | None
    study_uid: str | None
    patient_id: str | None
    num_files: int
    description: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Short text naming the study for messages and lists."""
        who = self.patient_id or "no PatientID"
        return f"{who}, study {self.study_uid or '<no uid>'}, series {self.series_uid or '<no uid>'} " \
               f"({self.num_files} files) in {self.source}"


@dataclass
class DiscoveryStats:
    """What the walk saw so far (also what the progress callback receives)."""

    files: int = 0
    headers: int = 0
    side_files: int = 0
    zips: int = 0
    series: int = 0
    studies: int = 0
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    """Files that look like DICOM but cannot be read, refused zips (first `MAX_LISTED_PROBLEMS`)."""
    n_problems: int = 0

    @property
    def headers_per_s(self) -> float:
        return self.headers / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def note(self, message: str) -> None:
        self.n_problems += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(message)


Progress = Callable[[DiscoveryStats], None]


@dataclass
class _SeriesSummary:
    """All the walk keeps about one series: a header without its dataset, a count, where it lives."""

    first: SliceHeader
    study_uid: str | None
    patient_id: str | None
    location: str
    count: int = 1
    mixed_locations: bool = False

    def add(self, location: str) -> None:
        self.count += 1
        if location != self.location:
            both = os.path.commonpath([self.location, location])
            self.mixed_locations |= self.location.endswith(ZIP_SUFFIX) or location.endswith(ZIP_SUFFIX)
            self.location = both


class _Walk:
    """State of one discovery walk (summaries by series, stats, progress timing)."""

    def __init__(self, progress: Progress | None, staging_dir: Path | None, limits: ReadLimits) -> None:
        self.series: dict[str, _SeriesSummary] = {}
        self.nifti: list[Path] = []
        self.image_folders: set[str] = set()
        """Folders holding PNG/JPG slices (a study each when they hold no DICOM: 8-bit exports)."""
        self.dicom_folders: set[str] = set()
        self.stats = DiscoveryStats()
        self.progress = progress
        self.staging_dir = staging_dir
        self.limits = limits
        self.start = time.perf_counter()
        self.last_report = self.start

    def tick(self, force: bool = False) -> None:
        now = time.perf_counter()
        self.stats.elapsed_s = now - self.start
        if self.progress is not None and (force or now - self.last_report >= PROGRESS_EVERY_S):
            self.stats.series = len(self.series)
            self.last_report = now
            self.progress(self.stats)

    def file(self, path: Path, location: str, name: str, *, in_zip: bool = False) -> None:
        """Look at one file: a zip is opened, NIfTI noted, side files skipped, DICOM summarised.
        ``location``: what a job reads for this file (its folder, or the zip holding it)."""
        self.stats.files += 1
        lower = name.lower()
        if lower.endswith(ZIP_SUFFIX):
            self.zip(path, name, staged=in_zip)
        elif lower.endswith(SIDE_FILE_SUFFIXES) or PurePath(name).name.upper() in SKIPPED_NAMES:
            self.stats.side_files += 1
        elif is_image(Path(name)):
            self.stats.side_files += 1
            if not in_zip:
                self.image_folders.add(location)
        elif is_nifti(Path(name)):
            if in_zip:
                self.stats.note(f"{name}: a NIfTI file inside a zip is not analysed; extract it first.")
            else:
                self.nifti.append(path)
        else:
            self.dicom(path, location, name)
        self.tick()

    def dicom(self, path: Path, location: str, name: str) -> None:
        try:
            header = read_header(path, name, self.limits)
        except CovidCTError as exc:
            self.stats.note(str(exc))
            return
        if header is None:
            self.stats.side_files += 1
            return
        self.stats.headers += 1
        self.dicom_folders.add(location)
        summary = self.series.get(header.series_uid)
        if summary is None:
            self.series[header.series_uid] = _summary(header, location)
        else:
            summary.add(location)

    def zip(self, path: Path, name: str, *, staged: bool) -> None:
        """Headers of a zip's members; a zip inside a zip is copied to ``staging_dir`` to be read later."""
        self.stats.zips += 1
        if staged:
            if self.staging_dir is None:
                self.stats.note(f"{name} is a zip inside a zip; give a staging folder (--data-dir) to "
                                "read it.")
                return
            path = _stage(path, name, self.staging_dir)
        with tempfile.TemporaryDirectory(prefix="covidct-discover-") as tmp:
            try:
                names = extract_zip_safely(path, Path(tmp), self.limits)
            except CovidCTError as exc:
                self.stats.note(str(exc))
                return
            for member in sorted(names, key=lambda p: names[p]):
                self.file(member, str(path), f"{name}/{names[member]}", in_zip=True)

    def folder(self, root: Path) -> None:
        """Every file below ``root``; links to folders are followed once (a link loop is not)."""
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                p = Path(dirpath) / fname
                if fname.startswith(".") or not is_regular_file(p):
                    continue
                self.file(p, dirpath, str(p.relative_to(root)))


def _summary(header: SliceHeader, location: str) -> _SeriesSummary:
    texts = header.texts
    slim = replace(header, dataset=Dataset(), texts={"SeriesDescription": texts.get("SeriesDescription")})
    return _SeriesSummary(first=slim, study_uid=texts.get("StudyInstanceUID") or None,
                          patient_id=texts.get("PatientID"), location=location)


def _stage(path: Path, name: str, staging_dir: Path) -> Path:
    """Copy a zip found inside a zip to ``staging_dir/<sha256 of its name and bytes>.zip``."""
    digest = hashlib.sha256(name.encode())
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    staging_dir.mkdir(parents=True, exist_ok=True)
    target = staging_dir / f"{digest.hexdigest()[:24]}.zip"
    if not target.exists():
        shutil.copyfile(path, target)
    return target


def _study_jobs(study_uid: str | None, members: dict[str, _SeriesSummary]) -> StudyJob:
    """The job of one study: its series chosen by `choose_series` (CT, axial, ORIGINAL, most slices)."""
    groups = {uid: [s.first] * s.count for uid, s in members.items()}
    chosen, warnings = choose_series(groups, None)
    s = members[chosen]
    notes = list(warnings)
    if s.mixed_locations:
        notes.append(f"series {chosen} is split between a zip and other files; reading {s.location}")
    return StudyJob(key=chosen or f"{NO_UID_KEY}{s.location}", source=Path(s.location),
                    series_uid=chosen or None, study_uid=study_uid, patient_id=s.patient_id,
                    num_files=s.count, description=s.first.texts.get("SeriesDescription") or "",
                    warnings=tuple(notes))


def _image_studies(root: Path, walk: _Walk) -> list[Path]:
    """PNG/JPG slice folders without DICOM (one study each), or ``root`` itself when it is an image."""
    if root.is_file():
        return [root] if is_image(root) else []
    return sorted(Path(f) for f in walk.image_folders - walk.dicom_folders)


def discover(root: str | os.PathLike[str], *, progress: Progress | None = None,
             staging_dir: Path | None = None, limits: ReadLimits | None = None,
             stats: DiscoveryStats | None = None) -> Iterator[StudyJob]:
    """One `StudyJob` per study under ``root`` (a folder, a zip or one file), in study order: DICOM
    studies by UID, then NIfTI files, then folders of PNG/JPG slices that hold no DICOM.

    Args:
        progress: called about once a second with the running `DiscoveryStats`, and once at the end.
        staging_dir: where zips found inside zips are copied so that their jobs can read them later.
        stats: filled in as the walk goes (counts, rate, unreadable files).

    Raises:
        NoDataError: ``root`` does not exist, or holds no DICOM series and no NIfTI file.
    """
    root = Path(root).absolute()
    if not root.exists():
        raise NoDataError(f"{str(root)!r} does not exist; give a folder or zip holding DICOM studies.")
    walk = _Walk(progress, staging_dir, limits or ReadLimits.from_env())
    if stats is not None:
        walk.stats = stats
    if root.is_dir():
        walk.folder(root)
    else:
        walk.file(root, str(root), root.name)
    studies: dict[str | None, dict[str, _SeriesSummary]] = {}
    for uid, summary in walk.series.items():
        studies.setdefault(summary.study_uid, {})[uid] = summary
    images = _image_studies(root, walk)
    walk.stats.studies = len(studies) + len(walk.nifti) + len(images)
    walk.tick(force=True)
    if not studies and not walk.nifti and not images:
        problems = f" Problems: {'; '.join(walk.stats.problems[:3])}" if walk.stats.problems else ""
        raise NoDataError(f"No DICOM series or NIfTI file found in {root} ({walk.stats.files} files looked "
                          f"at, {walk.stats.side_files} side files skipped).{problems} Give a folder or zip "
                          "holding DICOM CT studies.")
    for study_uid in sorted(studies, key=lambda u: u or ""):
        yield _study_jobs(study_uid, studies[study_uid])
    for path in [*walk.nifti, *images]:
        yield StudyJob(key=f"{NO_UID_KEY}{path.resolve()}", source=path.resolve(), series_uid=None,
                       study_uid=None, patient_id=None, num_files=1)


def discover_list(root: str | os.PathLike[str], **kwargs: object) -> list[StudyJob]:
    """`discover` as a list (what `predict` uses)."""
    return list(discover(root, **kwargs))  # type: ignore[arg-type]

