"""Leave-one-source-out with a weight-free scorer instead of a trained model.

A scorer maps one 2D grey slice (H, W; 0..255, lung-windowed) to P(COVID-19) in [0, 1] without any
learned weight (`SCORERS`; ``lesion-fraction`` = `covidct.explain.slice_lesions`). Nothing is
trained, so every source is unseen; the folds are kept anyway so the table is comparable with the
CNNs' in `covidct.training.loso`: the same `fold_records` (same validation patients for the same
seed), the fold's validation split chooses the patient aggregation and the threshold (`score_fold`),
the held-out group is the test split. Training records are never read.

Run folder (prediction CSVs in the engine's format, read by `score_fold`)::

    <out>/<fold>/predictions_val.csv, predictions_test.csv
    <out>/loso.json      {"scorer": {...}, "folds": {...}}
    <out>/loso.md        the table (`loso_table`)

A slice the scorer cannot analyse (no lung or body found: `ExplainError`) gets score 0 ("no lesion
found") and is counted per source in the fold's ``unscored``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from covidct.classes import CLASSES_BINARY, COVID
from covidct.errors import ExplainError, UnknownNameError, unknown_name_message
from covidct.training.loso import (
    DEFAULT_GROUPS,
    DEFAULT_VAL_FRACTION,
    LOSO_JSON,
    LOSO_MD,
    LosoResult,
    fold_name,
    fold_records,
    loso_table,
    score_fold,
)
from covidct.training.splits import records_in

UNSCORED_SCORE = 0.0
"""Score of a slice the scorer cannot analyse: no lesion found."""


def lesion_fraction_scorer(grey: np.ndarray) -> float:
    """Lesion fraction of the lung hull (`covidct.explain.slice_lesions`), in [0, 1]."""
    from covidct.explain.slice_lesions import slice_lesions

    return slice_lesions(grey).score


SCORERS: dict[str, Callable[[np.ndarray], float]] = {"lesion-fraction": lesion_fraction_scorer}
"""Weight-free slice scorers by name: (H, W) grey 0..255 -> P(COVID-19) in [0, 1]."""


def get_scorer(name: str) -> Callable[[np.ndarray], float]:
    if name not in SCORERS:
        raise UnknownNameError(unknown_name_message("scorer", name, tuple(SCORERS)))
    return SCORERS[name]


class _ScoredRefs:
    """The few methods of a dataset that `engine.write_predictions` reads, over `SliceRef`s."""

    def __init__(self, refs: Sequence[Any]) -> None:
        self.refs = list(refs)

    def record(self, index: int) -> Any:
        return self.refs[index].record

    def slice_index(self, index: int) -> int | None:
        return self.refs[index].slice_index


class SliceScores:
    """Scores of slices by (path, slice index), each slice read and scored once across the folds."""

    def __init__(self, scorer: Callable[[np.ndarray], float], loader: Any) -> None:
        self.scorer, self.loader = scorer, loader
        self._scores: dict[tuple[str, int | None], float] = {}
        self.failed: set[tuple[str, int | None]] = set()

    def __call__(self, ref: Any) -> float:
        key = (str(ref.record.path), ref.slice_index)
        if key not in self._scores:
            self._scores[key] = self._score(ref, key)
        return self._scores[key]

    def _score(self, ref: Any, key: tuple[str, int | None]) -> float:
        from covidct.preprocessing.transforms import LungWindow

        image, is_hu = self.loader(ref)
        grey = LungWindow()(image) if is_hu else np.asarray(image, np.float32)
        try:
            return float(np.clip(self.scorer(grey), 0.0, 1.0))
        except ExplainError:
            self.failed.add(key)
            return UNSCORED_SCORE

    def unscored(self, refs: Sequence[Any]) -> dict[str, int]:
        """Count of unscored slices per source among ``refs``."""
        bad = Counter(
            str(r.record.source) for r in refs if (str(r.record.path), r.slice_index) in self.failed
        )
        return dict(sorted(bad.items()))


def write_scored_predictions(path: Path, refs: Sequence[Any], scores: SliceScores) -> Path:
    """Prediction CSV of ``refs`` in the engine's format (binary classes, P(COVID-19) = score)."""
    from covidct.training.engine import write_predictions

    covid = np.array([scores(r) for r in refs], np.float64)
    probs = np.zeros((len(refs), len(CLASSES_BINARY)))
    probs[:, CLASSES_BINARY.index(COVID)] = covid
    probs[:, 1 - CLASSES_BINARY.index(COVID)] = 1.0 - covid
    return write_predictions(path, _ScoredRefs(refs), range(len(refs)), probs, CLASSES_BINARY)


def run_scorer_loso(
    records: Sequence[Any],
    out_dir: str | Path,
    *,
    scorer: str = "lesion-fraction",
    groups: Sequence[Sequence[str]] = DEFAULT_GROUPS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    loader: Any = None,
) -> LosoResult:
    """Score the validation and held-out slices of every fold with ``scorer``; write loso.json/md.

    Args:
        records: cohort records with ``source`` (`read_manifest`).
        seed: the split seed (`fold_records`) and the bootstrap seed (`score_fold`).
        loader: ``SliceRef -> (2D array, is_hu)``; default reads files (`VolumeLoader`).
    """
    from covidct.training.datasets import VolumeLoader, slice_refs

    loader = loader or VolumeLoader(cache_size=8)
    scores = SliceScores(get_scorer(scorer), loader)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folds: dict[str, dict[str, Any]] = {}
    for group in groups:
        name = fold_name(group)
        fold_start = time.perf_counter()
        recs = fold_records(records, group, val_fraction=val_fraction, seed=seed)
        (out / name).mkdir(exist_ok=True)
        refs = {split: slice_refs(records_in(recs, split), loader) for split in ("val", "test")}
        csvs = {
            split: write_scored_predictions(out / name / f"predictions_{split}.csv", refs[split], scores)
            for split in refs
        }
        fold = score_fold(csvs["val"], csvs["test"], seed=seed)
        fold.update(
            held_out=list(group),
            scorer=scorer,
            validation_sources=sorted({str(r.record.source) for r in refs["val"]}),
            unscored={split: scores.unscored(refs[split]) for split in refs},
            wall_time_s=round(time.perf_counter() - fold_start, 1),
        )
        folds[name] = fold
        write_scorer_loso(out, folds, scorer, val_fraction=val_fraction, seed=seed)
    return LosoResult(str(out), folds, time.perf_counter() - start)


def write_scorer_loso(
    out: Path, folds: dict[str, dict[str, Any]], scorer: str, *, val_fraction: float, seed: int
) -> None:
    """loso.json (scorer settings + folds) and loso.md (`loso_table`)."""
    settings = {"name": scorer, "trained": False, "val_fraction": val_fraction, "seed": seed}
    (out / LOSO_JSON).write_text(json.dumps({"scorer": settings, "folds": folds}, indent=2))
    (out / LOSO_MD).write_text(loso_table(folds))
