"""A checkpoint's held-out-source figures: built from a LOSO fold, read back, said in one sentence."""

from __future__ import annotations

from covidct.evaluation.validity import (
    UNTESTED_STATEMENT,
    VALIDITY_KEY,
    fold_validity,
    statement,
    validity_from_extra,
)


def _iv(estimate: float, low: float, high: float) -> dict:
    return {"estimate": estimate, "low": low, "high": high, "level": 0.95, "method": "percentile", "n": 3}


FOLD_MD = {
    "held_out": ["COVID-CT-MD"], "trained_on": ["Inf-Net", "Kaggle", "UCSD"], "validated_on": ["UCSD"],
    "patients": 3, "slices": 212, "auc_slice": _iv(0.8497, 0.6388, 0.9118), "auc_patient": _iv(1.0, 1.0, 1.0),
    "per_source": {"COVID-CT-MD": {"patients": 3, "slices": 212, "covid_patients": 1,
                                   "sensitivity": _iv(0.0, 0.0, 0.79), "specificity": _iv(1.0, 0.34, 1.0)}},
}
FOLD_UCSD = {**FOLD_MD, "held_out": ["UCSD"], "auc_slice": _iv(0.542, 0.50, 0.58)}
FOLD_ONE_CLASS = {
    "held_out": ["Inf-Net"], "trained_on": ["UCSD"], "patients": 98, "slices": 98, "auc_slice": None,
    "auc_patient": None,
    "per_source": {"Inf-Net": {"patients": 98, "auc_patient": None, "sensitivity": _iv(0.714, 0.62, 0.79)}},
}


def test_fold_validity_names_the_held_out_source_its_size_and_interval() -> None:
    record = fold_validity(FOLD_MD, {"COVID-CT-MD": FOLD_MD, "UCSD": FOLD_UCSD})
    assert record["held_out"] == ["COVID-CT-MD"] and record["trained_on"] == ["Inf-Net", "Kaggle", "UCSD"]
    assert record["auc_slice"] == {"estimate": 0.8497, "low": 0.6388, "high": 0.9118}
    assert record["recipe_auc_slice"] == {"groups": 2, "min": 0.542, "max": 0.8497}
    text = record["statement"]
    assert text.startswith("Tested on a source it never saw: COVID-CT-MD (3 patients, 212 slices)")
    assert "slice AUC 0.85 (95% CI 0.64-0.91)" in text and "patient AUC 1.00 (95% CI 1.00-1.00)" in text
    assert "COVID-CT-MD sensitivity 0.00 (95% CI 0.00-0.79) at the threshold chosen on validation" in text
    assert "held-out source groups: slice AUC 0.54-0.85" in text
    assert text.endswith("Trained on Inf-Net, Kaggle, UCSD.")


def test_a_one_class_group_is_described_by_its_sensitivity_not_an_auc() -> None:
    text = fold_validity(FOLD_ONE_CLASS)["statement"]
    assert "AUC" not in text
    assert ("Inf-Net (98 patients, 98 slices); Inf-Net sensitivity 0.71 (95% CI 0.62-0.79) at the threshold "
            "chosen on validation.") in text


def test_no_figure_says_the_accuracy_on_a_new_site_is_unknown() -> None:
    assert statement(None) == statement({}) == statement({"method": "random split"}) == UNTESTED_STATEMENT
    assert "unknown" in UNTESTED_STATEMENT
    assert validity_from_extra({"threshold": 0.5}) is None and validity_from_extra(None) is None
    record = fold_validity(FOLD_MD)
    assert validity_from_extra({VALIDITY_KEY: record, "threshold": 0.5}) == record
    assert "recipe_auc_slice" not in record
