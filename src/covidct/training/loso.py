"""Leave-one-source-out (LOSO): train on every source but a held-out group, score the held-out group.

Several sources hold one class only (Inf-Net and ieee8023 all COVID-19, LIDC-IDRI and Kaggle all
Normal), so an AUC on one of them alone is undefined. The held-out unit is therefore a *group* of
sources (`DEFAULT_GROUPS`): each two-class source alone, and the single-class sources paired into
two-class groups. Every fold reports

- the AUC of the group (slice level, CI by bootstrap over patients; patient level after the
  aggregation rule chosen on the fold's validation split), when the group holds both classes;
- per source in the group: sensitivity (COVID-19 sources) or specificity (Non-COVID sources) of
  the patient-level calls at the threshold chosen on validation (Youden), with Wilson 95% intervals,
  and the AUC with its bootstrap interval when the source holds both classes.

The validation split is drawn patient-wise from the training sources only; no record of a held-out
source ever reaches the training or validation set (`fold_records` raises if it would).

Run folder::

    <out>/<fold>/...            one engine run per fold (config.yaml, best.ckpt, predictions_*.csv);
                                best.ckpt carries the fold's held-out figures (extra["validity"])
    <out>/loso.json             every figure with its interval
    <out>/loso.md               the table
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covidct.classes import COVID
from covidct.errors import ConfigError, DataLeakageError, EvaluationError, NoDataError
from covidct.evaluation.validity import VALIDITY_KEY, fold_validity
from covidct.training.config import TrainConfig
from covidct.training.splits import records_in, split_by_patient

DEFAULT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("UCSD",),
    ("COVID-CT-MD",),
    ("Inf-Net", "LIDC-IDRI"),
    ("ieee8023", "Kaggle"),
)
"""Held-out groups: two-class sources alone; single-class sources paired (COVID-19 + Normal)."""
AGGREGATION_CANDIDATES = ("mean", "max", "topk:3")
"""Rules that keep a one-slice patient's probability as it is ('fraction:T' would turn it into 0/1 and
tie every such patient: UCSD, Inf-Net and Kaggle have one image per patient)."""
DEFAULT_VAL_FRACTION = 0.15
VAL_MODES = ("patients", "next-group")
"""Validation per fold: ``patients`` = `DEFAULT_VAL_FRACTION` of each training source's patients;
``next-group`` = the whole next group of ``groups`` (cyclic), never trained on: a held-out source
for early stopping, the aggregation rule and the threshold."""
N_BOOT = 2000
LOSO_JSON = "loso.json"
LOSO_MD = "loso.md"


# ----------------------------------------------------------------------------- folds
def parse_groups(text: str | None) -> tuple[tuple[str, ...], ...]:
    """``"UCSD;COVID-CT-MD;Inf-Net+LIDC-IDRI"`` -> (("UCSD",), ("COVID-CT-MD",), ("Inf-Net", "LIDC-IDRI"))."""
    if not text:
        return DEFAULT_GROUPS
    groups = tuple(tuple(s.strip() for s in part.split("+") if s.strip()) for part in text.split(";"))
    if not all(groups):
        raise ConfigError(f"--groups {text!r} has an empty group; write e.g. 'UCSD;Inf-Net+LIDC-IDRI'.")
    return groups


def two_class_sources(records: Sequence[Any]) -> set[str]:
    """Sources of ``records`` that hold more than one label."""
    labels: dict[str, set[str]] = {}
    for r in records:
        labels.setdefault(str(r.source), set()).add(str(r.label))
    return {source for source, held in labels.items() if len(held) > 1}


def validation_group(groups: Sequence[Sequence[str]], index: int) -> tuple[str, ...]:
    """The validation group of fold ``index`` in ``next-group`` mode: the next group, cyclically."""
    if len(groups) < 3:
        raise ConfigError("val_mode 'next-group' needs at least 3 groups (test, validation, training).")
    return tuple(groups[(index + 1) % len(groups)])


def fold_name(group: Sequence[str]) -> str:
    return "+".join(group)


def fold_records(
    records: Sequence[Any],
    held_out: Sequence[str],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    val_sources: Sequence[str] = (),
    two_class_only: bool = False,
) -> list[Any]:
    """Records of one fold: held-out sources -> ``test``; the rest split train/val by patient.

    The validation patients are drawn per source and label (``val_fraction`` of each, rounded), so
    one source's few large patients (COVID-CT-MD: 3 series of up to 102 slices) cannot all land in
    validation and leave training without them; a stratum of 1-3 patients stays in training.
    With ``val_sources`` those whole sources are the validation split instead (a second held-out
    source for early stopping and the operating point) and every other source trains.
    With ``two_class_only`` the training sources that hold one class only are left out (not
    trained, validated or tested on): in them the source alone predicts the label.

    Raises:
        ConfigError: a held-out or validation source absent from the cohort, the two overlapping, or
            nothing left to train on.
        DataLeakageError: a patient id shared between the held-out and the training sources.
    """
    present = {r.source for r in records}
    missing = [s for s in (*held_out, *val_sources) if s not in present]
    if missing:
        raise ConfigError(
            f"Held-out/validation source(s) {missing} are not in the cohort; "
            f"its sources: {sorted(present)}."
        )
    if set(held_out) & set(val_sources):
        both = sorted(set(held_out) & set(val_sources))
        raise ConfigError(f"Source(s) {both} are both tested and validated on; validate on another group.")
    test = [dataclasses.replace(r, split="test") for r in records if r.source in held_out]
    pool = [dataclasses.replace(r, split=None) for r in records if r.source not in held_out]
    if two_class_only:
        pool = [r for r in pool if r.source in two_class_sources(pool) or r.source in val_sources]
    if not {r.source for r in pool} - set(val_sources):
        raise ConfigError(
            f"Holding out {list(held_out)} (validating on {list(val_sources)}) leaves no source to train on."
        )
    shared = {r.patient_id for r in test} & {r.patient_id for r in pool}
    if shared:
        raise DataLeakageError(
            f"Patient id(s) {sorted(shared)[:5]} occur in a held-out and a training source; "
            "make ids unique per source."
        )
    if val_sources:
        split = [dataclasses.replace(r, split="val" if r.source in val_sources else "train") for r in pool]
        return split + test
    fractions = (1.0 - val_fraction, val_fraction, 0.0)
    trained = [
        r
        for source in sorted({str(r.source) for r in pool})
        for r in split_by_patient([r for r in pool if str(r.source) == source], fractions, seed=seed)
    ]
    if not any(r.split == "val" for r in trained):
        raise ConfigError(
            f"Holding out {list(held_out)} leaves no validation patient: the training sources "
            f"{sorted({str(r.source) for r in pool})} are too small to split at {val_fraction:.0%} per "
            "source and label. Validate on a held-out group instead (--val-mode next-group)."
        )
    return trained + test


# ----------------------------------------------------------------------------- data
def slice_bundle(config: TrainConfig, records: Sequence[Any], loader: Any) -> Any:
    """A `DataBundle` of 2D slices over ``records`` (splits given) sharing one volume ``loader``."""
    from covidct.training.data import DataBundle, build_recipe, describe, task_classes
    from covidct.training.datasets import SliceDataset, slice_refs

    recipe = build_recipe(config)
    classes = task_classes(config.data.task)

    def make(split: str, augment: bool) -> SliceDataset:
        refs = slice_refs(records_in(records, split), loader)
        return SliceDataset(refs, recipe, classes, loader=loader, augment=augment, seed=config.seed,
                            counterfactual=config.counterfactual if split == "train" else 0.0)

    bundle = DataBundle(
        train=make("train", config.augment),
        val=make("val", False),
        test=make("test", False),
        classes=classes,
        recipe=recipe,
    )
    bundle.description = describe(records, config)
    return bundle


# ----------------------------------------------------------------------------- scoring
def _covid_scores(table: Any) -> tuple[np.ndarray, np.ndarray]:
    pos = table.class_index(COVID)
    return (table.y_true == pos).astype(int), table.probs[:, pos]


def choose_aggregation(val: Any, candidates: Sequence[str] = AGGREGATION_CANDIDATES) -> str:
    """Patient aggregation with the best patient-level AUC on validation (first on ties; else mean)."""
    from covidct.evaluation.metrics import binary_auc
    from covidct.evaluation.predictions import aggregate_patients

    best, best_auc = "mean", -math.inf
    for rule in candidates:
        y, s = _covid_scores(aggregate_patients(val, rule))
        if y.min() == y.max():
            return "mean"
        auc = binary_auc(y, s)
        if auc > best_auc + 1e-12:
            best, best_auc = rule, auc
    return best


def _auc_interval(table: Any, seed: int) -> dict[str, Any] | None:
    """AUC of COVID-19 with a bootstrap interval over patients; None when one class only."""
    from covidct.evaluation.intervals import bootstrap_metrics

    y, _ = _covid_scores(table)
    if y.min() == y.max():
        return None
    ivs = bootstrap_metrics(
        table.y_true,
        table.y_pred,
        table.probs,
        groups=table.patient_id,
        class_names=table.class_names,
        n_boot=N_BOOT,
        random_state=seed,
    )
    return ivs[f"auc:{COVID}"].to_dict()


def _calibration(table: Any) -> dict[str, float]:
    from covidct.evaluation.metrics import brier_score, expected_calibration_error

    y, s = _covid_scores(table)
    return {"brier": float(brier_score(y, s)), "ece": float(expected_calibration_error(y, s))}


def score_fold(val_csv: str | Path, test_csv: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Every held-out figure of one fold from its validation and test prediction CSVs."""
    from covidct.evaluation.intervals import wilson_interval
    from covidct.evaluation.operating_point import choose_threshold
    from covidct.evaluation.predictions import aggregate_patients, read_predictions

    val, test = read_predictions(val_csv), read_predictions(test_csv)
    rule = choose_aggregation(val)
    val_p = aggregate_patients(val, rule)
    try:
        threshold = choose_threshold(*_covid_scores(val_p), rule="youden").threshold
    except EvaluationError:
        threshold = 0.5
    test_p = aggregate_patients(test, rule)
    out: dict[str, Any] = {
        "aggregation": rule,
        "threshold": threshold,
        "slices": len(test),
        "patients": len(test_p),
        "auc_slice": _auc_interval(test, seed),
        "auc_patient": _auc_interval(test_p, seed),
        "calibration_slice": _calibration(test),
        "per_source": {},
    }
    for source in sorted(set(test_p.source.tolist())):
        mine_p = test_p.subset(test_p.source == source)
        y, s = _covid_scores(mine_p)
        called = s >= threshold
        entry: dict[str, Any] = {
            "patients": len(mine_p),
            "slices": int(np.sum(test.source == source)),
            "covid_patients": int(y.sum()),
            "auc_patient": _auc_interval(mine_p, seed),
        }
        if y.sum():
            entry["sensitivity"] = wilson_interval(int(np.sum(called & (y == 1))), int(y.sum())).to_dict()
        if (1 - y).sum():
            entry["specificity"] = wilson_interval(
                int(np.sum(~called & (y == 0))), int((1 - y).sum())
            ).to_dict()
        entry["mean_covid_probability"] = float(s.mean())
        out["per_source"][source] = entry
    return out


# ----------------------------------------------------------------------------- the loop
@dataclass
class LosoResult:
    out_dir: str
    folds: dict[str, dict[str, Any]]
    wall_time_s: float


def run_loso(
    config: TrainConfig,
    records: Sequence[Any],
    out_dir: str | Path,
    *,
    groups: Sequence[Sequence[str]] = DEFAULT_GROUPS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_mode: str = "patients",
    two_class_only: bool = False,
    train_fn: Callable[..., Any] | None = None,
    loader: Any = None,
) -> LosoResult:
    """Train and score one fold per group of ``groups``; write loso.json and loso.md under ``out_dir``.

    ``config`` is used for every fold with ``out_dir`` set to ``<out_dir>/<fold>`` and the binary task.
    ``val_mode`` is one of `VAL_MODES`; ``two_class_only`` trains on two-class sources only
    (`fold_records`). ``train_fn(config, data)`` defaults to the engine's `train`.
    """
    if val_mode not in VAL_MODES:
        raise ConfigError(f"val_mode must be one of {VAL_MODES}, got {val_mode!r}.")
    from covidct.training.datasets import VolumeLoader
    from covidct.training.engine import train

    train_fn = train_fn or train
    loader = loader or VolumeLoader(cache_size=64)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folds: dict[str, dict[str, Any]] = {}
    for index, group in enumerate(groups):
        name = fold_name(group)
        fold_cfg = config.replace(**{"out_dir": str(out / name), "data.task": "binary"})
        val_sources = validation_group(groups, index) if val_mode == "next-group" else ()
        recs = fold_records(
            records, group, val_fraction=val_fraction, seed=config.data.split_seed, val_sources=val_sources,
            two_class_only=two_class_only,
        )
        fold_start = time.perf_counter()
        result = train_fn(fold_cfg, slice_bundle(fold_cfg, recs, loader))
        preds = result.predictions
        scores = score_fold(preds["val"], preds["test"], seed=config.seed)
        scores.update(
            held_out=list(group),
            trained_on=sorted({r.source for r in recs if r.split == "train"}),
            validated_on=sorted({r.source for r in recs if r.split == "val"}),
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            wall_time_s=round(time.perf_counter() - fold_start, 1),
        )
        folds[name] = scores
        _write(out, folds, config)
    _write_fold_outputs(out, folds)
    return LosoResult(str(out), folds, time.perf_counter() - start)


# ---------------------------------------------------------------- options of `covidct loso` (CNN runs)
def check_cnn_options(*, seed: int | None) -> None:
    """A CNN run takes its seeds from the config; ``--seed`` belongs to ``--scorer`` runs."""
    if seed is not None:
        raise ConfigError("--seed is for --scorer runs; a CNN run sets --set seed=N --set data.split_seed=N.")


def check_rescorable(out_dir: str | Path) -> Path:
    """``out_dir`` when it holds a finished CNN leave-one-source-out run (`rescore_loso` can score it)."""
    out = Path(out_dir)
    if not (out / LOSO_JSON).is_file():
        raise NoDataError(f"--rescore needs a finished LOSO folder; {out / LOSO_JSON} does not exist.")
    if "scorer" in json.loads((out / LOSO_JSON).read_text()):
        raise ConfigError(f"{out} was scored by --scorer (nothing trained): run it again with --scorer.")
    return out


def loso_config(config: str | Path | None, cohort: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The training config of a CNN run on ``cohort``: ``config`` (shipped name or YAML path) plus
    ``overrides``, refused unless it trains a slice model."""
    if config is None:
        raise ConfigError("loso needs --config CONFIG (train a model per fold) or --scorer NAME "
                          "(weight-free).")
    cfg = TrainConfig.from_yaml(config, **{**overrides, "data.path": str(cohort)})
    if cfg.data.unit != "slice":
        raise ConfigError(f"loso trains slice models (data.unit: slice); {config} has unit "
                          f"{cfg.data.unit!r}.")
    return cfg


def rescore_loso(out_dir: str | Path, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Score every finished fold of ``out_dir`` again from its prediction CSVs (e.g. after a change
    of the scoring rules); training fields of loso.json are kept. Rewrites loso.json/md and the cards."""
    out = Path(out_dir)
    saved = json.loads((out / LOSO_JSON).read_text())
    folds = saved["folds"]
    for name, fold in folds.items():
        kept = {
            k: fold[k]
            for k in ("held_out", "trained_on", "validated_on", "epochs_run", "best_epoch", "wall_time_s")
            if k in fold
        }
        folds[name] = {
            **score_fold(out / name / "predictions_val.csv", out / name / "predictions_test.csv", seed=seed),
            **kept,
        }
    config = TrainConfig.from_dict(saved["config"])
    _write(out, folds, config)
    _write_fold_outputs(out, folds)
    return folds


def _write_fold_outputs(out: Path, folds: dict[str, dict[str, Any]]) -> None:
    """Every fold's model card carries the whole LOSO table (its own fold is one row group of it), and
    every fold's best checkpoint carries its own held-out figures (`evaluation.validity`), which the
    Predictor shows beside each prediction."""
    from covidct.models.checkpoint import update_extra
    from covidct.training.engine import BEST_CKPT
    from covidct.training.model_card import write_model_card

    table = loso_table(folds)
    for name, fold in folds.items():
        if (out / name / "config.yaml").is_file():
            write_model_card(out / name, loso=folds, loso_table=table)
        best = out / name / BEST_CKPT
        if best.is_file():
            update_extra(best, best, {VALIDITY_KEY: fold_validity(fold, folds)})


def _write(out: Path, folds: dict[str, dict[str, Any]], config: TrainConfig) -> None:
    (out / LOSO_JSON).write_text(json.dumps({"config": config.to_dict(), "folds": folds}, indent=2))
    (out / LOSO_MD).write_text(loso_table(folds))


# ----------------------------------------------------------------------------- table
def _fmt(iv: dict[str, Any] | None) -> str:
    if not iv or iv.get("estimate") is None:
        return "n/a (one class)"
    low, high = iv.get("low"), iv.get("high")
    ci = "CI n/a" if low is None else f"{low:.2f}-{high:.2f}"
    return f"{iv['estimate']:.3f} ({ci})"


def _source_figure(entry: dict[str, Any]) -> str:
    parts = []
    if "sensitivity" in entry:
        parts.append(f"sens {_fmt(entry['sensitivity'])} n={entry['sensitivity']['n']}")
    if "specificity" in entry:
        parts.append(f"spec {_fmt(entry['specificity'])} n={entry['specificity']['n']}")
    return "; ".join(parts)


def loso_table(folds: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per held-out source (group AUCs on the group's first row)."""
    lines = [
        "| held-out group | source | patients (COVID) | slices | group AUC slice (95% CI) | "
        "group AUC patient (95% CI) | source AUC patient | sens / spec at val threshold (Wilson 95%) | "
        "mean P(COVID) | aggregation, threshold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, fold in folds.items():
        for i, (source, entry) in enumerate(fold["per_source"].items()):
            group_cells = [_fmt(fold["auc_slice"]), _fmt(fold["auc_patient"])] if i == 0 else ["", ""]
            lines.append(
                "| "
                + " | ".join(
                    [
                        name if i == 0 else "",
                        source,
                        f"{entry['patients']} ({entry['covid_patients']})",
                        str(entry["slices"]),
                        *group_cells,
                        _fmt(entry["auc_patient"]),
                        _source_figure(entry),
                        f"{entry['mean_covid_probability']:.3f}",
                        f"{fold['aggregation']}, {fold['threshold']:.3f}" if i == 0 else "",
                    ]
                )
                + " |"
            )
    return "\n".join(lines) + "\n"
