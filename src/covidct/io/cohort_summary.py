"""What a cohort holds before anyone trains on it: cases, patients, classes, sources, missing files."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from covidct.io.cohort import CaseRecord

MISSING_SHOWN = 5
"""Missing paths quoted in a summary."""
UNKNOWN_SOURCE = "(unknown)"


@dataclass
class GroupCount:
    """Cases (slices or scans) and distinct patients of one group (a class, a source, a split)."""

    cases: int = 0
    patients: int = 0


@dataclass
class CohortSummary:
    """Counts of a cohort; `to_dict()` is the ``covidct cohort --json`` output.

    Attributes:
        cases: records (one per slice for slice cohorts, one per scan otherwise).
        patients: distinct patient ids.
        by_class / by_source / by_split: `GroupCount` per group (patients counted once per group).
        patients_with_two_classes: patient ids whose records carry more than one label.
        missing_files: how many record paths do not exist (None when files were not checked).
        missing_examples: the first few of them.
        missing_advice: what to do about them ('' when none are missing).
        with_metadata: records carrying a metadata row (COVIDx metadata.csv).
    """

    path: str
    kind: str
    cases: int
    patients: int
    by_class: dict[str, GroupCount]
    by_source: dict[str, GroupCount]
    by_split: dict[str, GroupCount]
    patients_with_two_classes: list[str] = field(default_factory=list)
    missing_files: int | None = None
    missing_examples: list[str] = field(default_factory=list)
    missing_advice: str = ""
    with_metadata: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _group_counts(records: Sequence[CaseRecord], key) -> dict[str, GroupCount]:
    cases: Counter[str] = Counter()
    patients: dict[str, set[str]] = defaultdict(set)
    for record in records:
        group = key(record)
        cases[group] += 1
        patients[group].add(record.patient_id)
    return {g: GroupCount(cases[g], len(patients[g])) for g in sorted(cases)}


def missing_paths(records: Sequence[CaseRecord]) -> list[Path]:
    """Record paths that do not exist, in record order (one listing per folder, not one stat per file)."""
    listings: dict[str, set[str]] = {}
    missing = []
    for record in records:
        folder, name = os.path.split(str(record.path))
        if folder not in listings:
            listings[folder] = set(os.listdir(folder or ".")) if os.path.isdir(folder or ".") else set()
        if name not in listings[folder]:
            missing.append(record.path)
    return missing


def _missing_advice(kind: str, missing: list[Path], total: int) -> str:
    if not missing:
        return ""
    folders = sorted({str(p.parent) for p in missing})
    where = folders[0] if len(folders) == 1 else f"{len(folders)} folders"
    if kind == "covidx-split":
        return (
            f"{len(missing)} of {total} images are not in {where}. Pass --images DIR with the folder that "
            "holds the COVIDx CT PNG files (e.g. the Kaggle download's 3A_images/), or download them first."
        )
    return (
        f"{len(missing)} of {total} case paths do not exist (under {where}). Fix the paths in the cohort "
        "(relative paths are resolved against the manifest's folder) or restore the files."
    )


def cohort_kind(path: Path) -> str:
    """'class-folders', 'manifest' or 'covidx-split', as `read_cohort` dispatches."""
    if path.is_dir():
        return "class-folders"
    return "manifest" if path.suffix.lower() == ".csv" else "covidx-split"


def summarize_cohort(
    records: Sequence[CaseRecord], *, path: str | os.PathLike[str] = "", check_files: bool = True
) -> CohortSummary:
    """Count cases, patients, classes, sources and splits of `records`; optionally look for missing files."""
    path = Path(path)
    kind = cohort_kind(path) if str(path) else "records"
    labels_of: dict[str, set[str]] = defaultdict(set)
    for record in records:
        labels_of[record.patient_id].add(record.label)
    summary = CohortSummary(
        path=str(path),
        kind=kind,
        cases=len(records),
        patients=len(labels_of),
        by_class=_group_counts(records, lambda r: r.label),
        by_source=_group_counts(records, lambda r: r.source or UNKNOWN_SOURCE),
        by_split=_group_counts(records, lambda r: r.split or "(none)"),
        patients_with_two_classes=sorted(pid for pid, labels in labels_of.items() if len(labels) > 1),
        with_metadata=sum(1 for r in records if r.meta),
    )
    if check_files:
        missing = missing_paths(records)
        summary.missing_files = len(missing)
        summary.missing_examples = [str(p) for p in missing[:MISSING_SHOWN]]
        summary.missing_advice = _missing_advice(kind, missing, len(records))
    return summary
