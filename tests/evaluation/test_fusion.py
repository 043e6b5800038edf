"""The fused score: maximum likelihood recovers known weights; tables from the test split are refused."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from covidct.evaluation.fusion import (
    FusedScore,
    FusionDataError,
    FusionTable,
    fused_from_extra,
    read_fusion_table,
)

TRUE_WEIGHTS = (-2.0, 1.5, 0.4)
"""intercept, model logit, log1p(involvement %): distinct, so a swapped feature misses by > 1."""
N_PATIENTS = 4000
WEIGHT_TOLERANCE = 0.2


def synthetic_patients(seed: int = 0, n: int = N_PATIENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model probabilities, involvement % and 0/1 COVID-19 labels drawn from the TRUE_WEIGHTS model."""
    rng = np.random.default_rng(seed)
    model_logit = rng.normal(0.0, 2.0, n)
    p_model = 1.0 / (1.0 + np.exp(-model_logit))
    involvement = rng.exponential(8.0, n)
    b0, b_model, b_involvement = TRUE_WEIGHTS  # written out, not via `features`, so a swap there shows
    z = b0 + b_model * model_logit + b_involvement * np.log1p(involvement)
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    return p_model, involvement, y


def write_table(path: Path, p_model: np.ndarray, involvement: np.ndarray, y: np.ndarray,
                split: str = "val") -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "label", "prob_COVID-19", "prob_Normal", "involvement_pct", "split"])
        for i, (p, inv, c) in enumerate(zip(p_model, involvement, y, strict=True)):
            w.writerow([f"P{i:05d}", "COVID-19" if c else "Normal", f"{p:.8f}", f"{1 - p:.8f}", f"{inv:.6f}",
                        split])
    return path


def test_fit_recovers_known_weights() -> None:
    p_model, involvement, y = synthetic_patients()
    fused = FusedScore.fit(FusionTable(np.arange(y.size).astype(str), p_model, involvement, y, "synthetic"))
    got = (fused.intercept, fused.model_logit, fused.involvement)
    assert got == pytest.approx(TRUE_WEIGHTS, abs=WEIGHT_TOLERANCE)
    assert fused.fitted_on["converged"] is True
    assert fused.fitted_on["n_patients"] == {"COVID-19": int(y.sum()), "other": int(y.size - y.sum())}


def test_apply_uses_each_weight_on_its_own_feature() -> None:
    fused = FusedScore(*TRUE_WEIGHTS)
    expected = 1.0 / (1.0 + np.exp(-(-2.0 + 1.5 * np.log(0.8 / 0.2) + 0.4 * np.log1p(9.0))))
    assert fused.apply(0.8, 9.0) == pytest.approx(float(expected), rel=1e-9)
    assert fused_from_extra({"fusion": fused.to_dict()}) == fused
    assert fused_from_extra({"threshold": 0.5}) is None


def test_read_fusion_table_round_trip(tmp_path: Path) -> None:
    p_model, involvement, y = synthetic_patients(n=200)
    table = read_fusion_table(write_table(tmp_path / "val.csv", p_model, involvement, y))
    np.testing.assert_allclose(table.p_model, p_model, atol=1e-7)
    np.testing.assert_allclose(table.involvement_pct, involvement, atol=1e-5)
    np.testing.assert_array_equal(table.is_covid, y)
    fused = FusedScore.fit(table)
    assert fused.fitted_on["file"] == str(tmp_path / "val.csv") and len(fused.fitted_on["sha256"]) == 64


@pytest.mark.parametrize("split", ["test", "TEST", "train"])
def test_refuses_rows_outside_validation(tmp_path: Path, split: str) -> None:
    p_model, involvement, y = synthetic_patients(n=50)
    path = write_table(tmp_path / "t.csv", p_model, involvement, y, split=split)
    with pytest.raises(FusionDataError, match="never on test" if split.lower() == "test" else "validation"):
        read_fusion_table(path)


def test_refuses_one_test_row_among_validation(tmp_path: Path) -> None:
    p_model, involvement, y = synthetic_patients(n=50)
    path = write_table(tmp_path / "mixed.csv", p_model, involvement, y)
    lines = path.read_text().splitlines()
    lines[10] = lines[10].rsplit(",", 1)[0] + ",test"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FusionDataError, match="row 11 is from the test split"):
        read_fusion_table(path)


def test_refuses_missing_split_and_repeated_patients(tmp_path: Path) -> None:
    no_split = tmp_path / "nosplit.csv"
    no_split.write_text("patient_id,label,prob_COVID-19,involvement_pct\nA,COVID-19,0.9,3\n")
    with pytest.raises(FusionDataError, match="split"):
        read_fusion_table(no_split)
    repeated = tmp_path / "rep.csv"
    repeated.write_text("patient_id,label,prob_COVID-19,involvement_pct,split\n"
                        "A,COVID-19,0.9,3,val\nA,COVID-19,0.8,3,val\nB,Normal,0.1,0,val\nC,Normal,0.2,0,val\n")
    with pytest.raises(FusionDataError, match="one row per patient"):
        read_fusion_table(repeated)
