"""Leave-one-source-out with a lesion scorer instead of a CNN.

Two kinds of scorer (`SCORERS`), both on one 2D grey slice (H, W; 0..255, lung-windowed):

- **weight-free** (``lesion-fraction`` = `covidct.quant.slice_lesions`): P(COVID-19) in [0, 1] with
  no learned weight; nothing is trained, so every source is unseen.
- **fitted** (``lesion-logistic`` = `covidct.training.lesion_model`): a logistic regression on the
  13 lesion-pattern features of `covidct.quant.slice_features`, fitted per fold on the fold's
  *training* slices only, its regularisation chosen by leave-one-group-out inside those training
  sources (`select_by_groups`); the fitted model is written to ``<fold>/lesion_model.json``.

The folds are those of `covidct.training.loso` (same `fold_records`, same validation patients for the
same seed): the fold's validation split chooses the patient aggregation and the threshold
(`score_fold`), the held-out group is the test split, so the table is comparable with the CNNs'.

Run folder (prediction CSVs in the engine's format, read by `score_fold`)::

    <out>/<fold>/predictions_val.csv, predictions_test.csv[, lesion_model.json]
    <out>/loso.json      {"scorer": {...}, "folds": {...}}
    <out>/loso.md        the table (`loso_table`)

A slice the scorer cannot analyse (no lung or body found: `QuantError`) is counted per source in the
fold's ``unscored``; it scores 0 ("no lesion found") with a weight-free scorer and gets the training
medians of the features with a fitted one.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covidct.classes import CLASSES_BINARY, COVID
from covidct.errors import QuantError, UnknownNameError, unknown_name_message
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
"""Score of a slice a weight-free scorer cannot analyse: no lesion found."""
LESION_MODEL_JSON = "lesion_model.json"


def lesion_fraction_values(grey: np.ndarray) -> np.ndarray:
    """(1,): the lesion fraction of the lung hull (`covidct.quant.slice_lesions`), in [0, 1]."""
    from covidct.quant.slice_lesions import slice_lesions

    return np.array([slice_lesions(grey).score])


def lesion_feature_values(grey: np.ndarray) -> np.ndarray:
    """(13,): the lesion-pattern features of `covidct.quant.slice_features`."""
    from covidct.quant.slice_features import slice_features

    return slice_features(grey)


@dataclass(frozen=True)
class Scorer:
    """``values``: grey slice -> (D,) figures. Weight-free (``fitted`` False): D = 1 and the figure is
    P(COVID-19). Fitted: a `LesionModel` is fitted per fold on the training slices' figures."""

    name: str
    values: Callable[[np.ndarray], np.ndarray]
    fitted: bool
    feature_names: tuple[str, ...] = ()


def _lesion_logistic() -> Scorer:
    from covidct.quant.slice_features import FEATURE_NAMES

    return Scorer("lesion-logistic", lesion_feature_values, True, FEATURE_NAMES)


SCORERS: dict[str, Callable[[], Scorer]] = {
    "lesion-fraction": lambda: Scorer("lesion-fraction", lesion_fraction_values, False),
    "lesion-logistic": _lesion_logistic,
}
"""Slice scorers by name (built on demand)."""


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise UnknownNameError(unknown_name_message("scorer", name, tuple(SCORERS)))
    return SCORERS[name]()


class _ScoredRefs:
    """The few methods of a dataset that `engine.write_predictions` reads, over `SliceRef`s."""

    def __init__(self, refs: Sequence[Any]) -> None:
        self.refs = list(refs)

    def record(self, index: int) -> Any:
        return self.refs[index].record

    def slice_index(self, index: int) -> int | None:
        return self.refs[index].slice_index


class SliceValues:
    """A scorer's figures of slices by (path, slice index), each slice read and analysed once across
    the folds; NaN figures for a slice that cannot be analysed (listed in ``failed``)."""

    def __init__(self, values: Callable[[np.ndarray], np.ndarray], loader: Any, size: int) -> None:
        self.values, self.loader, self.size = values, loader, size
        self._cache: dict[tuple[str, int | None], np.ndarray] = {}
        self.failed: set[tuple[str, int | None]] = set()

    def __call__(self, refs: Sequence[Any]) -> np.ndarray:
        """(N, D) figures of ``refs``."""
        return np.stack([self._one(ref) for ref in refs]) if refs else np.zeros((0, self.size))

    def _one(self, ref: Any) -> np.ndarray:
        key = (str(ref.record.path), ref.slice_index)
        if key not in self._cache:
            self._cache[key] = self._compute(ref, key)
        return self._cache[key]

    def _compute(self, ref: Any, key: tuple[str, int | None]) -> np.ndarray:
        from covidct.preprocessing.transforms import LungWindow

        image, is_hu = self.loader(ref)
        grey = LungWindow()(image) if is_hu else np.asarray(image, np.float32)
        try:
            return np.asarray(self.values(grey), np.float64).reshape(self.size)
        except QuantError:
            self.failed.add(key)
            return np.full(self.size, np.nan)

    def unscored(self, refs: Sequence[Any]) -> dict[str, int]:
        """Count of unscored slices per source among ``refs``."""
        bad = Counter(
            str(r.record.source) for r in refs if (str(r.record.path), r.slice_index) in self.failed
        )
        return dict(sorted(bad.items()))


def write_scored_predictions(path: Path, refs: Sequence[Any], covid: np.ndarray) -> Path:
    """Prediction CSV of ``refs`` in the engine's format (binary classes, P(COVID-19) = ``covid``)."""
    from covidct.training.engine import write_predictions

    covid = np.clip(np.asarray(covid, np.float64), 0.0, 1.0)
    probs = np.zeros((len(refs), len(CLASSES_BINARY)))
    probs[:, CLASSES_BINARY.index(COVID)] = covid
    probs[:, 1 - CLASSES_BINARY.index(COVID)] = 1.0 - covid
    return write_predictions(path, _ScoredRefs(refs), range(len(refs)), probs, CLASSES_BINARY)


def source_groups(refs: Sequence[Any], groups: Sequence[Sequence[str]]) -> list[str]:
    """The `fold_name` of the group of each ref's source (the source itself when in no group)."""
    of_source = {source: fold_name(group) for group in groups for source in group}
    return [of_source.get(str(r.record.source), str(r.record.source)) for r in refs]


def fit_fold_model(
    scorer: Scorer, train: Sequence[Any], values: SliceValues, groups: Sequence[Sequence[str]]
) -> Any:
    """The `LesionModel` of one fold: fitted on the training refs only, its setting chosen by
    leave-one-group-out over the training groups (`select_by_groups`)."""
    from covidct.training.lesion_model import select_by_groups

    labels = np.array([str(r.record.label) == COVID for r in train], np.float64)
    return select_by_groups(values(train), labels, source_groups(train, groups), scorer.feature_names)


def run_scorer_loso(
    records: Sequence[Any],
    out_dir: str | Path,
    *,
    scorer: str = "lesion-fraction",
    groups: Sequence[Sequence[str]] = DEFAULT_GROUPS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    loader: Any = None,
    data: str | None = None,
) -> LosoResult:
    """Score the validation and held-out slices of every fold with ``scorer`` (a fitted scorer is
    first fitted on the fold's training slices and gets a model card per fold); write loso.json/md.

    Args:
        records: cohort records with ``source`` (`read_manifest`).
        seed: the split seed (`fold_records`) and the bootstrap seed (`score_fold`).
        loader: ``SliceRef -> (2D array, is_hu)``; default reads files (`VolumeLoader`).
        data: the cohort's path, named on the model cards.
    """
    from covidct.training.data import split_counts
    from covidct.training.datasets import VolumeLoader, slice_refs

    chosen = get_scorer(scorer)
    loader = loader or VolumeLoader(cache_size=8)
    values = SliceValues(chosen.values, loader, len(chosen.feature_names) or 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folds: dict[str, dict[str, Any]] = {}
    cards: dict[str, Any] = {}
    for group in groups:
        name = fold_name(group)
        fold_start = time.perf_counter()
        recs = fold_records(records, group, val_fraction=val_fraction, seed=seed)
        (out / name).mkdir(exist_ok=True)
        splits = ("train", "val", "test") if chosen.fitted else ("val", "test")
        refs = {split: slice_refs(records_in(recs, split), loader) for split in splits}
        extra: dict[str, Any] = {}
        if chosen.fitted:
            model = fit_fold_model(chosen, refs["train"], values, groups)
            model.to_json(out / name / LESION_MODEL_JSON)
            extra["model"] = {"c": model.c, "weighting": model.weighting, "selection": model.selection,
                              "coef": dict(zip(model.feature_names, model.coef, strict=True))}
            score = model.predict_proba
            cards[name] = (model, split_counts(recs))
        else:
            score = _weight_free_score
        csvs = {
            split: write_scored_predictions(
                out / name / f"predictions_{split}.csv", refs[split], score(values(refs[split]))
            )
            for split in ("val", "test")
        }
        fold = score_fold(csvs["val"], csvs["test"], seed=seed)
        fold.update(
            held_out=list(group),
            scorer=scorer,
            trained_on=sorted({str(r.record.source) for r in refs.get("train", [])}),
            validation_sources=sorted({str(r.record.source) for r in refs["val"]}),
            unscored={split: values.unscored(refs[split]) for split in refs},
            wall_time_s=round(time.perf_counter() - fold_start, 1),
            **extra,
        )
        folds[name] = fold
        write_scorer_loso(out, folds, chosen, val_fraction=val_fraction, seed=seed)
    _write_lesion_cards(out, folds, cards, data)
    return LosoResult(str(out), folds, time.perf_counter() - start)


def _write_lesion_cards(
    out: Path, folds: dict[str, dict[str, Any]], cards: dict[str, Any], data: str | None
) -> None:
    """A model card per fitted fold, each carrying the whole LOSO table."""
    from covidct.training.model_card import build_lesion_model_card, write_card

    table = loso_table(folds)
    for name, (model, counts) in cards.items():
        card = build_lesion_model_card(
            out / name, model, counts=counts, data=data, loso=folds,
            loso_table=table, wall_time_s=folds[name]["wall_time_s"],
        )
        write_card(out / name, card)


def _weight_free_score(figures: np.ndarray) -> np.ndarray:
    """P(COVID-19) of a weight-free scorer: its one figure, `UNSCORED_SCORE` where it is NaN."""
    return np.where(np.isfinite(figures[:, 0]), figures[:, 0], UNSCORED_SCORE)


def write_scorer_loso(
    out: Path, folds: dict[str, dict[str, Any]], scorer: Scorer, *, val_fraction: float, seed: int
) -> None:
    """loso.json (scorer settings + folds) and loso.md (`loso_table`)."""
    settings = {"name": scorer.name, "trained": scorer.fitted, "val_fraction": val_fraction, "seed": seed}
    if scorer.fitted:
        settings["features"] = list(scorer.feature_names)
    (out / LOSO_JSON).write_text(json.dumps({"scorer": settings, "folds": folds}, indent=2))
    (out / LOSO_MD).write_text(loso_table(folds))
