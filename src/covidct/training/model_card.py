"""Model card of a trained checkpoint, written into its run folder (``model_card.md`` + ``.json``).

Everything on the card is read from the run folder's own files (config.yaml, data.json, env.json,
result.json, predictions_*.csv) and, when given, a leave-one-source-out result: a card can never
state a figure the run did not produce. Sections: model, data and sources, split rule, recipe,
epochs, machine and time, validation/test figures, calibration, leave-one-source-out table, known
failure modes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from covidct.classes import COVID

MODEL_CARD_MD = "model_card.md"
MODEL_CARD_JSON = "model_card.json"
SOURCES_WITHOUT_PATIENT_IDS = ("UCSD", "Inf-Net", "Kaggle")
GENERAL_FAILURE_MODES = (
    "Research and decision-support use only; not a certified medical device.",
    "A model trained on few sources can learn the source (scanner, figure crop, screenshot, 8-bit vs HU "
    "export) instead of the disease: on a source it never saw its ranking can invert "
    "(issue 11: a UCSD-trained "
    "model scored every COVID-19 study of COVID-CT-MD below every normal one). Trust only the "
    "leave-one-source-out figures for new sites.",
    "Slice classifiers see one axial slice at a time; patient calls depend on the aggregation rule and on "
    "which slices are fed (lung slices only).",
)


def _read(path: Path, loader: Any = json.loads) -> Any:
    return loader(path.read_text()) if path.is_file() else None


def _calibration(csv_path: Path) -> dict[str, Any] | None:
    """Brier score and ECE of P(COVID-19) on a binary predictions CSV (None otherwise)."""
    if not csv_path.is_file():
        return None
    from covidct.evaluation.metrics import brier_score, expected_calibration_error
    from covidct.evaluation.predictions import read_predictions

    table = read_predictions(csv_path)
    if COVID not in table.class_names or len(table.class_names) != 2:
        return None
    pos = table.class_names.index(COVID)
    y, p = (table.y_true == pos).astype(int), table.probs[:, pos]
    return {
        "rows": len(table),
        "brier": round(float(brier_score(y, p)), 4),
        "ece": round(float(expected_calibration_error(y, p)), 4),
        "mean_predicted": round(float(p.mean()), 4),
        "observed_rate": round(float(y.mean()), 4),
    }


def _sources(data: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{split: {source/label: count}} from data.json's records_per_split_source_label."""
    out: dict[str, dict[str, int]] = {}
    for key, count in (data.get("records_per_split_source_label") or {}).items():
        split, _, rest = key.partition("/")
        out.setdefault(split, {})[rest] = count
    return out


def _failure_modes(sources: dict[str, dict[str, int]], loso: dict[str, Any] | None) -> list[str]:
    seen = {k.split("/")[0] for per in sources.values() for k in per}
    modes = list(GENERAL_FAILURE_MODES)
    no_ids = sorted(seen & set(SOURCES_WITHOUT_PATIENT_IDS))
    if no_ids:
        modes.append(
            f"{', '.join(no_ids)} have no patient ids: each image counts as a patient, so validation "
            "figures on them are optimistic (patient leakage possible)."
        )
    if len(seen - {"None"}) <= 1:
        modes.append("Trained on a single source: expect it to fail on other hospitals and scanners.")
    if loso:
        weak = [
            name for name, f in loso.items() if f.get("auc_slice") and (f["auc_slice"].get("low") or 0) <= 0.5
        ]
        if weak:
            modes.append(f"Held-out AUC interval reaches 0.5 or below for: {', '.join(weak)}.")
    return modes


def build_model_card(
    run_dir: str | Path, *, loso: dict[str, Any] | None = None, loso_table: str | None = None
) -> dict[str, Any]:
    """The card's content as a dict, from the files of ``run_dir``."""
    run = Path(run_dir)
    config = _read(run / "config.yaml", yaml.safe_load) or {}
    data = _read(run / "data.json") or {}
    env = _read(run / "env.json") or {}
    result = _read(run / "result.json") or {}
    sources = _sources(data)
    fractions = (config.get("data") or {}).get("fractions")
    return {
        "model": (config.get("model") or {}).get("name"),
        "model_overrides": (config.get("model") or {}).get("overrides"),
        "checkpoint": str(run / "best.ckpt"),
        "data": data.get("data") or (config.get("data") or {}).get("path"),
        "task": data.get("task"),
        "records_per_split_source_label": sources,
        "patients_per_split_label": data.get("patients_per_split_label"),
        "split_rule": (
            f"patient-wise, stratified by label, seed {(config.get('data') or {}).get('split_seed')}, "
            f"fractions train/val/test {fractions} for records without a split; splits given by the "
            "cohort (or by leave-one-source-out: held-out sources = test) are kept"
        ),
        "recipe": {
            "preprocessing": config.get("recipe"),
            "optimizer": config.get("optimizer"),
            "scheduler": config.get("scheduler"),
            "batch_size": config.get("batch_size"),
            "augment": config.get("augment"),
            "balance": config.get("balance"),
            "early_stopping": config.get("early_stopping"),
            "seed": config.get("seed"),
        },
        "epochs": {
            "planned": config.get("epochs"),
            "run": result.get("epochs_run"),
            "best": result.get("best_epoch"),
            "stopped_early": result.get("stopped_early"),
        },
        "machine": env,
        "wall_time_s": result.get("wall_time_s"),
        "final_metrics": result.get("final_metrics"),
        "calibration": {split: _calibration(run / f"predictions_{split}.csv") for split in ("val", "test")},
        "leave_one_source_out": loso,
        "known_failure_modes": _failure_modes(sources, loso),
        "_loso_table": loso_table,
    }


def _md(card: dict[str, Any]) -> str:
    def block(value: Any) -> str:
        return "```\n" + yaml.safe_dump(value, sort_keys=False).strip() + "\n```"

    lines = [
        f"# Model card: {card['model']} ({Path(card['checkpoint']).parent.name})",
        "",
        "Research use only, not for diagnosis.",
        "",
        "## Data and sources",
        f"Data: `{card['data']}` (task {card['task']}).",
        "Records per split and source/label:",
        block(card["records_per_split_source_label"]),
        "Patients per split/label:",
        block(card["patients_per_split_label"]),
        "## Split rule",
        card["split_rule"] + ".",
        "## Recipe",
        block(card["recipe"]),
        "## Epochs",
        block(card["epochs"]),
        "## Machine and time",
        block({**(card["machine"] or {}), "wall_time_s": card["wall_time_s"]}),
        "## Validation / test figures (best checkpoint)",
        block(card["final_metrics"]),
        "## Calibration of P(COVID-19) (Brier, expected calibration error, 10 bins)",
        block(card["calibration"]),
        "## Leave-one-source-out",
    ]
    if card.get("_loso_table"):
        lines.append(card["_loso_table"])
    else:
        lines.append(
            "Not run for this checkpoint: its figures say nothing about sources it never saw. "
            "Run `covidct loso COHORT --config CONFIG --out DIR`."
        )
    lines += ["## Known failure modes", *[f"- {m}" for m in card["known_failure_modes"]]]
    return "\n\n".join(lines) + "\n"


LESION_MODEL_FAILURE_MODES = (
    "It scores opacities (ground glass, consolidation) and their distribution, which other pneumonias "
    "share: on COVID-CT-MD it ranks the CAP study above the COVID-19 one.",
    "Its lungs come from an Otsu threshold: lungs whitened by consolidation and subpleural lesions "
    "merged with the chest wall are partly missed, so dense disease can score low.",
)


def build_lesion_model_card(
    fold_dir: str | Path, model: Any, *, counts: dict[str, Any], data: str | None,
    loso: dict[str, Any] | None = None, loso_table: str | None = None, wall_time_s: float | None = None,
) -> dict[str, Any]:
    """The card of one fold's `covidct.training.lesion_model.LesionModel` (same sections as a CNN's);
    ``counts`` = `covidct.training.data.split_counts` of the fold's records."""
    import platform

    fold = Path(fold_dir)
    sources = _sources(counts)
    return {
        "model": "lesion-logistic",
        "model_overrides": None,
        "checkpoint": str(fold / "lesion_model.json"),
        "data": data,
        "task": "binary",
        "records_per_split_source_label": sources,
        "patients_per_split_label": counts.get("patients_per_split_label"),
        "split_rule": (
            "leave-one-source-out (`covidct.training.loso.fold_records`): the held-out group is the test "
            "split; validation = 15% of each training source's patients (chooses the aggregation and the "
            "threshold); the model is fitted on the training slices only"
        ),
        "recipe": {
            "features": list(model.feature_names),
            "model": "standardised features -> L2 logistic regression (Newton)",
            "c": model.c,
            "weighting": model.weighting,
            "selection_leave_one_group_out_auc": model.selection,
            "coefficients": dict(zip(model.feature_names, model.coef, strict=True)),
        },
        "epochs": {"fit": "Newton's method to convergence (no epochs)"},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or None},
        "wall_time_s": wall_time_s,
        "final_metrics": "see the leave-one-source-out table (this fold's held-out group is its test split)",
        "calibration": {split: _calibration(fold / f"predictions_{split}.csv") for split in ("val", "test")},
        "leave_one_source_out": loso,
        "known_failure_modes": [*_failure_modes(sources, loso), *LESION_MODEL_FAILURE_MODES],
        "_loso_table": loso_table,
    }


def write_card(run_dir: str | Path, card: dict[str, Any]) -> Path:
    """Write ``card`` as ``model_card.md`` and ``model_card.json`` into ``run_dir``."""
    run = Path(run_dir)
    (run / MODEL_CARD_JSON).write_text(
        json.dumps({k: v for k, v in card.items() if not k.startswith("_")}, indent=2, default=str)
    )
    path = run / MODEL_CARD_MD
    path.write_text(_md(card))
    return path


def write_model_card(
    run_dir: str | Path, *, loso: dict[str, Any] | None = None, loso_table: str | None = None
) -> Path:
    """Write ``model_card.md`` and ``model_card.json`` into ``run_dir``; returns the markdown path."""
    run = Path(run_dir)
    card = build_model_card(run, loso=loso, loso_table=loso_table)
    return write_card(run, card)
