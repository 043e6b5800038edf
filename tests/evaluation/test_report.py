"""evaluate_predictions writes every section, figures and limitations; the CLI runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from covidct import RESEARCH_USE_STATEMENT
from covidct.errors import EvaluationError
from covidct.evaluation import evaluate_predictions, write_predictions
from covidct.evaluation.report import SECTION_TITLES

from .conftest import synthetic_table, write_reads

N_BOOT = 300


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    table = synthetic_table(80, slices=4, split_fraction=0.4)
    preds = write_predictions(table, tmp / "preds.csv")
    other = write_predictions(
        synthetic_table(80, slices=4, split_fraction=0.4, signal=0.5), tmp / "other.csv"
    )
    reads = write_reads(tmp / "reads.csv", table)
    evaluate_predictions(
        preds,
        out_dir=tmp / "out",
        reads=reads,
        tune_split="val",
        operating_point="spec:0.9",
        n_boot=N_BOOT,
        compare=other,
        aggregate="topk:2",
    )
    return tmp / "out"


def test_report_has_every_section_and_figure(full_report: Path) -> None:
    html = (full_report / "report.html").read_text()
    md = (full_report / "report.md").read_text()
    for key, title in SECTION_TITLES.items():
        heading = title.format(positive="COVID-19")
        assert f"<h2>{heading}</h2>" in html.replace("&#39;", "'"), key
        assert f"## {heading}" in md, key
    assert RESEARCH_USE_STATEMENT in html and RESEARCH_USE_STATEMENT in md
    for png in ("confusion_matrix.png", "roc.png", "calibration.png", "readers_roc.png"):
        assert (full_report / png).stat().st_size > 1000, png
        assert f'src="{png}"' in html


def test_metrics_json_has_intervals_and_n(full_report: Path) -> None:
    m = json.loads((full_report / "metrics.json").read_text())
    acc = m["overall"]["accuracy"]
    assert (
        acc["low"] <= acc["estimate"] <= acc["high"]
        and acc["n"] == m["n_patients"]
        and acc["n_boot"] == N_BOOT
    )
    assert set(m["per_class"]["COVID-19"]) >= {
        "sensitivity",
        "ppv",
        "specificity",
        "npv",
        "f1",
        "auc",
        "auc_delong",
    }
    assert m["operating_point"]["chosen_on"]["specificity"] >= 0.9
    assert m["comparison"]["mcnemar"]["method"] in ("exact", "chi2-cc")
    assert m["slice_level"]["accuracy"]["n"] == m["n_patients"]  # slices resampled by patient
    assert m["reader_study"]["readers"] and m["research_use"] == RESEARCH_USE_STATEMENT
    assert any("outside the test split" in x for x in m["limitations"])


def test_one_class_test_set_reports_auc_undefined(tmp_path: Path) -> None:
    table = synthetic_table(30)
    only_covid = table.subset(table.y_true == 2)
    res = evaluate_predictions(only_covid, out_dir=tmp_path / "o", n_boot=100)
    m = res.metrics
    assert m["per_class"]["COVID-19"]["auc"]["estimate"] is None
    assert "undefined" in m["per_class"]["COVID-19"]["auc"]["reason"]
    assert any(x.startswith("AUC undefined: test set has one class") for x in m["limitations"])
    assert "AUC undefined: test set has one class" in (tmp_path / "o" / "report.html").read_text()
    assert not (tmp_path / "o" / "roc.png").exists()


def test_operating_point_needs_a_tuning_split(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="tune-split"):
        evaluate_predictions(synthetic_table(20), out_dir=tmp_path, operating_point="youden", n_boot=10)
    with pytest.raises(EvaluationError, match="'split' column"):
        evaluate_predictions(synthetic_table(20), out_dir=tmp_path, tune_split="val", n_boot=10)


def _cli():
    from covidct.cli.app import app
    from covidct.cli.main import load_commands

    load_commands()
    return app


def test_cli_evaluate_and_compare(tmp_path: Path) -> None:
    table = synthetic_table(40, slices=3, split_fraction=0.4)
    preds = write_predictions(table, tmp_path / "a.csv")
    other = write_predictions(
        synthetic_table(40, slices=3, split_fraction=0.4, signal=0.3), tmp_path / "b.csv"
    )
    runner = CliRunner()
    res = runner.invoke(
        _cli(),
        [
            "evaluate",
            "--predictions",
            str(preds),
            "--aggregate",
            "max",
            "--tune-split",
            "val",
            "--operating-point",
            "youden",
            "--n-boot",
            "200",
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "report.html").exists()
    res = runner.invoke(
        _cli(),
        [
            "compare",
            "--predictions",
            str(preds),
            "--predictions",
            str(other),
            "--n-boot",
            "200",
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "McNemar" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,patient_id,label,prob_Normal,prob_COVID\na,P1,COVID,0.2,0.9\n")
    res = runner.invoke(_cli(), ["evaluate", "--predictions", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "do not sum to 1" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(_cli(), ["evaluate", "--checkpoint", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "--data" in res.output
    assert np.isfinite(
        json.loads((tmp_path / "c" / "metrics.json").read_text())["comparison"]["mcnemar"]["p_value"]
    )


class _FrameLike:
    """The two pandas DataFrame members evaluate_predictions uses (pandas is not a dependency)."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.columns = list(records[0])

    def to_dict(self, orient: str) -> list[dict]:
        assert orient == "records"
        return self.records


def test_dataframe_input_is_validated_like_a_csv(tmp_path: Path) -> None:
    rows = [
        {
            "case_id": f"c{i}",
            "patient_id": f"p{i}",
            "label": ["Normal", "COVID-19"][i % 2],
            "prob_Normal": 0.7 - 0.4 * (i % 2),
            "prob_COVID-19": 0.3 + 0.4 * (i % 2),
        }
        for i in range(10)
    ]
    res = evaluate_predictions(_FrameLike(rows), out_dir=tmp_path / "df", n_boot=50, plots=False)
    assert res.metrics["overall"]["accuracy"]["estimate"] == 1.0
    rows[3]["prob_Normal"] = float("nan")
    with pytest.raises(EvaluationError, match=r"NaN or non-numeric probabilities in row\(s\) 4"):
        evaluate_predictions(_FrameLike(rows), out_dir=tmp_path / "df2", n_boot=50)
