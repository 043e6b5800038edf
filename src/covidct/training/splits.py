"""Patient-level, stratified, seeded splits and class balancing by repetition."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from covidct.errors import ConfigError, DataLeakageError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "tune": "val",
    "tuning": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
MAX_IDS_SHOWN = 10


def normalise_split(name: str | None) -> str | None:
    """Canonical split name (``train``/``val``/``test``) or None; `ConfigError` for unknown names."""
    if name is None or str(name).strip() == "":
        return None
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ConfigError(f"Unknown split {name!r}. Valid split names: {', '.join(sorted(SPLIT_ALIASES))}.")
    return SPLIT_ALIASES[key]


def patient_of(record: Any) -> str:
    """Patient id of a record; records without one count as their own patient (case id)."""
    return str(record.patient_id) if getattr(record, "patient_id", None) else f"case:{record.case_id}"


def check_no_leakage(records: Sequence[Any]) -> None:
    """Raise `DataLeakageError` listing every patient that appears in more than one split (split names
    normalised, records without a patient id counted as their own patient)."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        split = normalise_split(getattr(rec, "split", None))
        if split is not None:
            splits_of[patient_of(rec)].add(split)
    leaked = sorted(pid for pid, s in splits_of.items() if len(s) > 1)
    if leaked:
        shown = ", ".join(f"{pid} ({'/'.join(sorted(splits_of[pid]))})" for pid in leaked[:MAX_IDS_SHOWN])
        more = f" and {len(leaked) - MAX_IDS_SHOWN} more" if len(leaked) > MAX_IDS_SHOWN else ""
        raise DataLeakageError(
            f"{len(leaked)} patient(s) appear in more than one split: {shown}{more}. "
            "Assign each patient to exactly one split in the manifest, or drop the split column to let "
            "covidct split by patient."
        )


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts per split summing to ``n`` (largest remainder), at least one train item."""
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n > 0 and counts[0] == 0:
        donor = int(np.argmax(counts))
        counts[donor] -= 1
        counts[0] += 1
    return counts.tolist()


def split_by_patient(
    records: Sequence[Any], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> list[Any]:
    """Assign each patient to train/val/test, stratified by the patient's label, seeded.

    Records that already carry a split keep it (after a leakage check); the others are split.
    Returns new records (``dataclasses.replace``) with ``split`` set.
    """
    if len(fractions) != len(SPLITS):
        raise ConfigError(f"fractions must be (train, val, test), got {list(fractions)}.")
    check_no_leakage(records)
    if all(normalise_split(getattr(r, "split", None)) for r in records):
        return [_with_split(r, normalise_split(r.split)) for r in records]
    label_of: dict[str, str] = {}
    for rec in records:
        label_of.setdefault(patient_of(rec), str(rec.label))
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    by_label: dict[str, list[str]] = defaultdict(list)
    for pid, label in label_of.items():
        by_label[label].append(pid)
    for label in sorted(by_label):
        pids = sorted(by_label[label])
        rng.shuffle(pids)
        start = 0
        for split, count in zip(SPLITS, _allocate(len(pids), fractions), strict=True):
            for pid in pids[start : start + count]:
                assignment[pid] = split
            start += count
    out = []
    for rec in records:
        given = normalise_split(getattr(rec, "split", None))
        out.append(_with_split(rec, given or assignment[patient_of(rec)]))
    check_no_leakage(out)
    return out


def _with_split(record: Any, split: str | None) -> Any:
    if dataclasses.is_dataclass(record):
        return dataclasses.replace(record, split=split)
    record.split = split
    return record


def records_in(records: Sequence[Any], split: str) -> list[Any]:
    """Records of one split."""
    return [r for r in records if normalise_split(getattr(r, "split", None)) == split]


def balance_by_repetition(labels: Sequence[int], seed: int = 0) -> list[int]:
    """Indices that repeat each class's items up to the largest class's count (COVIDNet-CT rule).

    Every item of a class appears ``floor(max/n_c)`` times, and a seeded random subset of the class
    once more to reach exactly ``max`` items per class.
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[int(label)].append(i)
    if not by_class:
        return []
    target = max(len(v) for v in by_class.values())
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for label in sorted(by_class):
        items = by_class[label]
        reps, rest = divmod(target, len(items))
        out.extend(items * reps)
        out.extend(sorted(rng.choice(items, size=rest, replace=False).tolist()))
    return out


def count_by(records: Sequence[Any], *keys: str) -> dict[str, int]:
    """Counts of records per value of ``keys`` joined by '/', e.g. ``count_by(r, "split", "label")``."""
    counter = Counter("/".join(str(getattr(r, k, None)) for k in keys) for r in records)
    return dict(sorted(counter.items()))
