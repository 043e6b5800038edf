"""Reader studies: Fleiss' kappa against a published example, categories, a synthetic study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covidct.evaluation.readers import (
    ReadsFormatError,
    fleiss_kappa,
    kappa_category,
    read_reads,
    reader_study,
)

from .conftest import synthetic_table, write_reads

# Fleiss (1971) worked example as given in Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_worked_example() -> None:
    assert fleiss_kappa(np.array(FLEISS_TABLE)) == pytest.approx(0.210, abs=5e-4)


@pytest.mark.parametrize(
    ("kappa", "category"),
    [
        (-0.1, "poor"),
        (0.20, "poor"),
        (0.21, "fair"),
        (0.40, "fair"),
        (0.6, "moderate"),
        (0.8, "good"),
        (0.81, "excellent"),
        (float("nan"), "undefined"),
    ],
)
def test_liu_kappa_categories(kappa: float, category: str) -> None:
    assert kappa_category(kappa) == category


def test_reader_study_on_synthetic_reads(tmp_path: Path) -> None:
    table = synthetic_table(60)
    reads = read_reads(write_reads(tmp_path / "reads.csv", table))
    truth = {p: int(y == 2) for p, y in zip(table.patient_id, table.y_true, strict=True)}
    model_call = {p: int(c == 2) for p, c in zip(table.patient_id, table.y_pred, strict=True)}
    study = reader_study(reads, truth, model_call, positive="COVID-19", n_boot=300)
    assert len(study["readers"]) == 6  # 3 readers x (without, with)
    r1 = study["readers"][0]
    calls = reads.call[(reads.reader == "R1") & ~reads.with_ai] == "COVID-19"
    cases = reads.case_id[(reads.reader == "R1") & ~reads.with_ai]
    y = np.array([truth[c] for c in cases])
    assert r1["sensitivity"]["estimate"] == pytest.approx(np.mean(calls[y == 1]))
    assert r1["sensitivity"]["method"] == "wilson"
    assert {"mcnemar", "accuracy", "sensitivity", "specificity"} <= set(r1["vs_model"])
    assert len(study["with_vs_without_ai"]) == 3
    fleiss = [a for a in study["agreement"] if "fleiss_kappa" in a]
    assert len(fleiss) == 2 and all(
        a["category"] in ("poor", "fair", "moderate", "good", "excellent") for a in fleiss
    )
    assert len([a for a in study["agreement"] if "kappa" in a]) == 6


def test_reads_errors(tmp_path: Path) -> None:
    bad = tmp_path / "r.csv"
    bad.write_text("reader,case_id,call\nR1,P1,COVID\n")
    with pytest.raises(ReadsFormatError, match="with_ai"):
        read_reads(bad)
    bad.write_text("reader,case_id,call,with_ai\nR1,P1,COVID,maybe\n")
    with pytest.raises(ReadsFormatError, match="true/false"):
        read_reads(bad)
    bad.write_text("reader,case_id,call,with_ai\nR1,P1,COVID,0\nR1,P1,Normal,0\n")
    with pytest.raises(ReadsFormatError, match="duplicate"):
        read_reads(bad)
    bad.write_text("reader,case_id,call,with_ai\nR1,ZZZ,COVID,0\n")
    with pytest.raises(ReadsFormatError, match="ZZZ"):
        reader_study(read_reads(bad), {"P1": 1}, {"P1": 1}, positive="COVID-19", n_boot=10)
