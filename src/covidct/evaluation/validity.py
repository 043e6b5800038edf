"""What a checkpoint is known to do on scans from a source it never saw, carried inside the checkpoint.

A model trained on a few sources can learn the source instead of the disease (docs/results.md, issue
11), so the one figure that says how it will do at a new site is its leave-one-source-out result.
`covidct loso` writes each fold's held-out figures into that fold's checkpoints (``extra["validity"]``);
the Predictor shows them, as one sentence, beside every prediction the checkpoint makes, and says
plainly when a checkpoint carries none.

    validity = fold_validity(folds["COVID-CT-MD"], folds)   # one fold of a loso.json
    statement(validity)  # 'Tested on a source it never saw: COVID-CT-MD (3 patients, 212 slices) ...'
    statement(None)      # 'Not tested on a source it never saw ...'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VALIDITY_KEY = "validity"
"""Key of the held-out-source figures in a checkpoint's ``extra``."""
METHOD = "leave-one-source-out"
UNTESTED_STATEMENT = (
    "Not tested on a source it never saw (this checkpoint carries no leave-one-source-out figure): its "
    "accuracy on scans from a new hospital or scanner is unknown, and a model trained on few sources can "
    "learn the source instead of the disease."
)
INTERVAL_KEYS = ("estimate", "low", "high")


def _interval(value: Mapping[str, Any] | None) -> dict[str, float] | None:
    """``{estimate, low, high}`` of a bootstrap/Wilson interval dict, or None when undefined."""
    if not value or value.get("estimate") is None:
        return None
    return {k: float(value[k]) for k in INTERVAL_KEYS if value.get(k) is not None}


def _per_source(fold: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per held-out source: patients, and the sensitivity or specificity at the validation threshold."""
    out: dict[str, dict[str, Any]] = {}
    for source, entry in (fold.get("per_source") or {}).items():
        row: dict[str, Any] = {"patients": int(entry.get("patients", 0))}
        for name in ("sensitivity", "specificity", "auc_patient"):
            interval = _interval(entry.get(name))
            if interval is not None:
                row[name] = interval
        out[str(source)] = row
    return out


def fold_validity(fold: Mapping[str, Any], folds: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """The validity record of one LOSO fold's checkpoint (a fold entry of ``loso.json``).

    ``folds`` (every fold of the run) adds the range of held-out slice AUCs over the recipe's folds:
    what the same recipe did on each source group it was kept from.
    """
    record: dict[str, Any] = {
        "method": METHOD,
        "held_out": list(fold.get("held_out") or []),
        "trained_on": list(fold.get("trained_on") or []),
        "patients": int(fold.get("patients", 0)),
        "slices": int(fold.get("slices", 0)),
        "auc_slice": _interval(fold.get("auc_slice")),
        "auc_patient": _interval(fold.get("auc_patient")),
        "per_source": _per_source(fold),
    }
    aucs = {name: f["auc_slice"]["estimate"] for name, f in (folds or {}).items()
            if (f.get("auc_slice") or {}).get("estimate") is not None}
    if aucs:
        values = list(aucs.values())
        record["recipe_auc_slice"] = {"groups": len(values), "min": min(values), "max": max(values)}
    record["statement"] = statement(record)
    return record


def _fmt(interval: Mapping[str, float]) -> str:
    text = f"{interval['estimate']:.2f}"
    if "low" in interval and "high" in interval:
        text += f" (95% CI {interval['low']:.2f}-{interval['high']:.2f})"
    return text


def statement(validity: Mapping[str, Any] | None) -> str:
    """One line a reader can check: the held-out source, its size and figures, or that there are none."""
    if not validity or validity.get("method") != METHOD:
        return UNTESTED_STATEMENT
    held = "+".join(validity.get("held_out") or []) or "?"
    parts = [f"Tested on a source it never saw: {held} ({validity.get('patients', 0)} patients, "
             f"{validity.get('slices', 0)} slices)"]
    if validity.get("auc_slice"):
        parts.append(f"slice AUC {_fmt(validity['auc_slice'])}")
    if validity.get("auc_patient"):
        parts.append(f"patient AUC {_fmt(validity['auc_patient'])}")
    for source, row in (validity.get("per_source") or {}).items():
        for name in ("sensitivity", "specificity"):
            if name in row:
                parts.append(f"{source} {name} {_fmt(row[name])} at the threshold chosen on validation")
    text = "; ".join(parts) + "."
    recipe = validity.get("recipe_auc_slice")
    if recipe and recipe.get("groups", 0) > 1:
        text += (f" The same recipe on each of {recipe['groups']} held-out source groups: slice AUC "
                 f"{recipe['min']:.2f}-{recipe['max']:.2f}.")
    if validity.get("trained_on"):
        text += f" Trained on {', '.join(validity['trained_on'])}."
    return text


def validity_from_extra(extra: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The validity record a checkpoint's ``extra`` carries, or None."""
    value = (extra or {}).get(VALIDITY_KEY)
    return dict(value) if isinstance(value, Mapping) else None
