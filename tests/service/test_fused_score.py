"""The fused score end to end: `covidct fuse fit` refuses test data, writes weights into a checkpoint copy,
and the Predictor and its report show the fused score only when the checkpoint carries those weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from covidct.evaluation.fusion import FusedScore
from covidct.models.checkpoint import update_extra
from covidct.service.predictor import Predictor
from covidct.service.report import write_study_report

WEIGHTS = FusedScore(intercept=-1.0, model_logit=0.7, involvement=0.9, fitted_on={
    "file": "val.csv", "n_patients": {"COVID-19": 3, "other": 4}, "date": "2026-11-30T00:00:00+00:00"})

VAL_CSV = ("patient_id,label,prob_COVID-19,involvement_pct,split\n"
           "A,COVID-19,0.9,6,val\nB,COVID-19,0.4,9,val\nC,COVID-19,0.7,1,val\n"
           "D,Normal,0.2,0.1,val\nE,Normal,0.6,0.3,val\nF,CAP,0.3,4,val\n")


def _cli(args: list[str]):
    from covidct.cli.main import app, load_commands

    load_commands()
    return CliRunner().invoke(app, args)


def test_cli_fit_writes_weights_beside_the_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    val = tmp_path / "val.csv"
    val.write_text(VAL_CSV)
    out = tmp_path / "fused.ckpt"
    res = _cli(["fuse", "fit", str(val), "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert res.exit_code == 0, res.output
    extra = torch.load(out, weights_only=True)["extra"]
    assert extra["threshold"] == torch.load(tiny_checkpoint, weights_only=True)["extra"]["threshold"]
    fitted = extra["fusion"]["fitted_on"]
    assert fitted["file"] == str(val) and fitted["n_patients"] == {"COVID-19": 3, "other": 3}
    assert fitted["split"] == "validation" and fitted["checkpoint"] == str(tiny_checkpoint)
    assert json.loads(res.stdout)["weights"] == extra["fusion"]["weights"]


def test_cli_refuses_the_test_split(tiny_checkpoint: Path, tmp_path: Path) -> None:
    test_csv = tmp_path / "test.csv"
    test_csv.write_text(VAL_CSV.replace(",val\n", ",test\n"))
    out = tmp_path / "fused.ckpt"
    res = _cli(["fuse", "fit", str(test_csv), "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert res.exit_code != 0
    assert "never on test" in res.output and "Traceback" not in res.output
    assert not out.exists()


@pytest.fixture(scope="module")
def fused_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fused") / "fused.ckpt"
    return update_extra(tiny_checkpoint, out, {"fusion": WEIGHTS.to_dict()})


def test_predictor_shows_the_fused_score_with_weights(fused_checkpoint: Path, one_study: Path,
                                                      tmp_path: Path) -> None:
    result = Predictor([fused_checkpoint], explain=False).predict(one_study)
    assert result.quantitative and result.quantitative["available"]
    involvement_pct = 100.0 * result.quantitative["involvement"]["total"]
    expected = WEIGHTS.apply(result.covid_probability, involvement_pct)
    assert result.fused is not None
    assert result.fused["probability"] == pytest.approx(expected, abs=1e-6)
    assert result.fused["probability"] != pytest.approx(result.covid_probability, abs=1e-4)
    assert "validation" in result.fused["label"] and result.fused["weights"]["involvement"] == 0.9
    data = result.to_dict()
    html = Path(write_study_report(data, result.overlays, tmp_path / "r")["html"]).read_text()
    assert "Fused score" in html and f"{result.fused['probability']:.3f}" in html


def test_no_weights_means_no_fused_score(tiny_checkpoint: Path, one_study: Path, tmp_path: Path) -> None:
    result = Predictor([tiny_checkpoint], explain=False).predict(one_study)
    assert result.fused is None and result.to_dict()["fused"] is None
    html = Path(write_study_report(result.to_dict(), result.overlays, tmp_path / "r")["html"]).read_text()
    assert "Fused score" not in html


def test_ensemble_ignores_single_model_weights(fused_checkpoint: Path, tiny_checkpoint: Path) -> None:
    with pytest.warns(RuntimeWarning, match="fusion weights ignored"):
        pred = Predictor([fused_checkpoint, tiny_checkpoint], explain=False)
    assert pred.fusion is None
