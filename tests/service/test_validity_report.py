"""Every prediction says what its model is known to do on a source it never saw (or that nothing is known):
in the result, the HTML report, the DICOM SR text and the CLI line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covidct.evaluation.validity import UNTESTED_STATEMENT, VALIDITY_KEY, fold_validity
from covidct.models.checkpoint import update_extra
from covidct.service.dicom_export import export_result
from covidct.service.predictor import Predictor
from covidct.service.report import write_study_report

FOLD = {"held_out": ["COVID-CT-MD"], "trained_on": ["Inf-Net", "UCSD"], "patients": 3, "slices": 212,
        "auc_slice": {"estimate": 0.85, "low": 0.64, "high": 0.91}, "auc_patient": None, "per_source": {}}


@pytest.fixture(scope="module")
def tested_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("validity") / "fold.ckpt"
    return update_extra(tiny_checkpoint, out, {VALIDITY_KEY: fold_validity(FOLD)})


def _html(result, tmp_path: Path) -> str:
    return Path(write_study_report(result.to_dict(), result.overlays, tmp_path / "r")["html"]).read_text()


def test_a_loso_checkpoint_reports_its_held_out_figure(tested_checkpoint: Path, one_study: Path,
                                                       tmp_path: Path) -> None:
    result = Predictor([tested_checkpoint], explain=False, quantitative=False).predict(one_study)
    [validity] = result.validity
    expected = ("Tested on a source it never saw: COVID-CT-MD (3 patients, 212 slices); "
                "slice AUC 0.85 (95% CI 0.64-0.91). Trained on Inf-Net, UCSD.")
    assert validity["statement"] == expected and validity["held_out"] == ["COVID-CT-MD"]
    assert json.loads(json.dumps(result.to_dict()))["validity"][0]["statement"] == expected
    assert expected in _html(result, tmp_path)
    assert f"On sources it never saw: {expected}" in export_result(result).notes


def test_a_checkpoint_without_figures_says_so(tiny_checkpoint: Path, one_study: Path, tmp_path: Path) -> None:
    result = Predictor([tiny_checkpoint], explain=False, quantitative=False).predict(one_study)
    assert [v["statement"] for v in result.validity] == [UNTESTED_STATEMENT]
    assert UNTESTED_STATEMENT in _html(result, tmp_path)
    assert f"On sources it never saw: {UNTESTED_STATEMENT}" in export_result(result).notes


def test_an_ensemble_reports_each_model_and_no_model_reports_nothing(
        tested_checkpoint: Path, tiny_checkpoint: Path, one_study: Path) -> None:
    pred = Predictor([tested_checkpoint, tiny_checkpoint], explain=False, quantitative=False)
    statements = [v["statement"] for v in pred.describe()["validity"]]
    assert statements[0].startswith("Tested on a source it never saw") and statements[1] == UNTESTED_STATEMENT
    assert Predictor([]).predict(one_study).validity is None


def test_predict_command_prints_the_statement(tested_checkpoint: Path, one_study: Path,
                                              tmp_path: Path) -> None:
    from covidct.cli.main import app, load_commands

    load_commands()
    res = CliRunner().invoke(app, ["predict", str(one_study), "--checkpoint", str(tested_checkpoint),
                                   "--out", str(tmp_path / "reports"), "--no-explain"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["validity"] == [fold_validity(FOLD)["statement"]]
