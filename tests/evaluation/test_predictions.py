"""Predictions CSV validation and patient aggregation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covidct.errors import EvaluationError
from covidct.evaluation.predictions import (
    PredictionsFormatError,
    aggregate_patients,
    parse_aggregation,
    read_predictions,
    write_predictions,
)

from .conftest import synthetic_table

HEADER = "case_id,patient_id,label,prob_Normal,prob_CP,prob_NCP\n"


def _csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "p.csv"
    path.write_text(header + body)
    return path


def test_round_trip_and_aliases(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,P1,NCP,0.1,0.2,0.7\nb,P2,normal,0.8,0.1,0.1\n")
    table = read_predictions(path)
    assert table.class_names == ("Normal", "Pneumonia", "COVID-19")
    assert table.y_true.tolist() == [2, 0]
    again = read_predictions(write_predictions(table, tmp_path / "q.csv"))
    np.testing.assert_allclose(again.probs, table.probs)


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        (
            "case_id,label,prob_Normal,prob_CP,prob_NCP\n",
            "a,NCP,0.1,0.2,0.7\n",
            r"missing required column\(s\) \['patient_id'\]",
        ),
        (
            "case_id,patient_id,label,prob_Normal,prob_Alien\n",
            "a,P1,Normal,0.5,0.5\n",
            "prob_Alien.*unknown class",
        ),
        ("case_id,patient_id,label\n", "a,P1,Normal\n", "No probability columns"),
        (HEADER, "a,P1,Martian,0.1,0.2,0.7\n", "Row 1: unknown label 'Martian'"),
        (
            HEADER,
            "a,P1,NCP,0.1,nan,0.7\nb,P2,NCP,0.1,,0.7\n",
            r"NaN or non-numeric probabilities in row\(s\) 1, 2",
        ),
        (
            HEADER,
            "a,P1,NCP,0.1,0.2,0.7\nb,P2,NCP,0.5,0.2,0.7\n",
            r"do not sum to 1.*row\(s\) 2 \(case_id b\)",
        ),
        (
            HEADER,
            "a,P1,NCP,0.1,0.2,0.7\nb,P1,Normal,0.5,0.2,0.3\n",
            r"patient\(s\) P1 have rows with two different labels",
        ),
        (HEADER, "", "no rows"),
    ],
)
def test_bad_inputs_raise_with_the_offending_rows(tmp_path: Path, header: str, body: str, match: str) -> None:
    with pytest.raises(PredictionsFormatError, match=match):
        read_predictions(_csv(tmp_path, body, header))


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist"):
        read_predictions(tmp_path / "nope.csv")


def _slice_table():
    table = synthetic_table(5, slices=6, seed=2)
    return table, np.unique(table.patient_id)


def test_aggregation_rules_match_plain_loops() -> None:
    table, patients = _slice_table()
    for rule, reduce in (
        ("mean", lambda p: p.mean(0)),
        ("max", lambda p: p.max(0)),
        ("topk:3", lambda p: np.sort(p, axis=0)[-3:].mean(0)),
        ("topk:50", lambda p: p.mean(0)),  # k larger than the slice count -> mean of all
        ("fraction:0.4", lambda p: (p >= 0.4).mean(0)),
    ):
        agg = aggregate_patients(table, rule)
        assert agg.patient_id.tolist() == patients.tolist()
        for i, pid in enumerate(patients):
            expected = reduce(table.probs[table.patient_id == pid])
            if expected.sum() == 0:
                expected = table.probs[table.patient_id == pid].mean(0)
            np.testing.assert_allclose(agg.probs[i], expected / expected.sum(), err_msg=rule)
        assert agg.is_patient_level


@pytest.mark.parametrize("rule", ["median", "topk:0", "topk:x", "fraction:1.5", "max:3"])
def test_bad_aggregation_rule(rule: str) -> None:
    with pytest.raises(EvaluationError, match="topk:5"):
        parse_aggregation(rule)
