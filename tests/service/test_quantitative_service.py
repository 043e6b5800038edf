"""Quantitative CT as a product: Predictor, CLI, API and DICOM SR without any checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.service.conftest import make_token, wait_done, zip_bytes
from typer.testing import CliRunner

from covidct.io.dicom_write import write_dicom_series
from covidct.service.predictor import NO_MODEL_NAME, Predictor
from covidct.synthetic import add_lesion, make_phantom

SHAPE = (48, 192, 192)
SPACING = (2.5, 1.5, 1.5)


@pytest.fixture(scope="module")
def left_lower_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DICOM series of a phantom with one ground-glass lesion in the left lower zone."""
    normal = make_phantom("Normal", shape=SHAPE, spacing=SPACING, seed=0)
    phantom = add_lesion(normal, side="left", zone="lower", radius_mm=14.0)
    out = tmp_path_factory.mktemp("quant") / "series"
    write_dicom_series(phantom.volume, out)
    return out


@pytest.fixture(scope="module")
def no_model_result(left_lower_study: Path):
    return Predictor([]).predict(left_lower_study)


def test_predictor_without_checkpoint_gives_the_quantitative_report(no_model_result) -> None:
    data = no_model_result.to_dict()
    json.dumps(data)
    assert data["model_name"] == NO_MODEL_NAME and data["predicted_class"] is None
    assert data["probabilities"] == {} and data["covid_probability"] is None
    quant = data["quantitative"]
    assert quant["available"] is True
    zones = quant["zones"]
    assert max(zones, key=lambda z: zones[z]["lesion_ml"]) == "left lower"
    assert quant["lesion_ml"]["left"] > quant["lesion_ml"]["right"]
    assert data["abnormal_fraction"] == pytest.approx(quant["involvement"]["total"], abs=1e-5)
    assert data["has_lesions"] and no_model_result.lesion_labels.shape == SHAPE
    # the key slices show the lesion: lesion voxels on each, drawn in the overlay PNGs
    for k in data["key_slices"]:
        assert (no_model_result.lesion_labels[k] > 0).any()
        assert no_model_result.overlays[k][:4] == b"\x89PNG"
    assert data["timings"]["quantify"] > 0


def test_8bit_input_says_not_available(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / f"slice_{i:03d}.png")
    result = Predictor([]).predict(folder).to_dict()
    assert result["quantitative"]["available"] is False
    reason = result["quantitative"]["reason"]
    assert "not available" in reason and "Hounsfield" in reason
    assert result["abnormal_fraction"] is None


def test_cli_predict_without_checkpoint(left_lower_study: Path, tmp_path: Path) -> None:
    from covidct.cli.main import app, load_commands

    load_commands()
    res = CliRunner().invoke(app, ["predict", str(left_lower_study), "--out", str(tmp_path / "reports")])
    assert res.exit_code == 0, res.output
    line = json.loads(res.output.strip().splitlines()[-1])
    assert line["predicted_class"] is None and "CT severity score" in line["quantitative"]
    html = Path(line["report"]).read_text()
    assert "Quantitative CT" in html and "left lower" in html and "not a diagnosis" in html


def test_structured_report_carries_the_measurements(no_model_result, left_lower_study: Path) -> None:
    import pydicom

    from covidct.service.dicom_export import build_key_images, build_structured_report

    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(left_lower_study.iterdir())]
    sr = build_structured_report(sources, no_model_result)
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert "Finding" not in items  # no model, no class
    total = items["total lung involvement"].MeasuredValueSequence[0]
    expected = 100 * no_model_result.quantitative["involvement"]["total"]
    assert float(total.NumericValue) == pytest.approx(expected, abs=1e-3)
    assert total.MeasurementUnitsCodeSequence[0].CodeValue == "%"
    volume = items["left lung volume"].MeasuredValueSequence[0]
    assert volume.MeasurementUnitsCodeSequence[0].CodeValue == "ml"
    score = items["CT severity score total"].MeasuredValueSequence[0]
    assert int(float(score.NumericValue)) == no_model_result.quantitative["severity_total"]
    comments = [i.TextValue for i in sr.ContentSequence if i.ValueType == "TEXT"]
    assert any(c.startswith("Pattern suggestion:") and "not a diagnosis" in c for c in comments)
    assert len(build_key_images(sources, no_model_result)) == len(no_model_result.overlays)


def test_api_without_checkpoint_serves_numbers_and_lesions(left_lower_study: Path, tmp_path: Path) -> None:
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from covidct.service.api import ServiceSettings, create_app

    db = tmp_path / "api.db"
    token = make_token(db, "test")
    settings = ServiceSettings(checkpoints=[], db=str(db), data_dir=str(tmp_path / "data"), workers=1)
    upload = zip_bytes(left_lower_study)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        resp = client.post("/studies", files=[("files", ("study.zip", upload, "application/zip"))])
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        job = wait_done(client, job_id)
        assert job["status"] == "done", job
        result = job["result"]
        assert result["quantitative"]["available"] and result["has_lesions"]
        k = result["key_slices"][0]
        layer = client.get(f"/studies/{job_id}/lesions/{k}.png")
        assert layer.status_code == 200
        rgba = np.asarray(Image.open(io.BytesIO(layer.content)))
        assert rgba.shape == (*SHAPE[1:], 4) and (rgba[..., 3] > 0).any()
        no_heatmap = client.get(f"/studies/{job_id}/overlay/{k}.png")  # no model, no heatmap
        assert no_heatmap.status_code == 404


def test_cli_triage_without_checkpoint(left_lower_study: Path, tmp_path: Path) -> None:
    from covidct.cli.main import app, load_commands
    from covidct.service.store import JobStore

    load_commands()
    db = tmp_path / "triage.db"
    res = CliRunner().invoke(app, ["triage", str(left_lower_study.parent), "--db", str(db)])
    assert res.exit_code == 0, res.output
    store = JobStore(str(db))
    jobs = store.list_jobs()
    assert len(jobs) == 1 and jobs[0].status == "done"
    result = store.get(jobs[0].id).result
    assert result["quantitative"]["available"] and result["predicted_class"] is None
    store.close()


def test_with_a_checkpoint_model_and_quantification_side_by_side(tiny_checkpoint: Path,
                                                                 left_lower_study: Path) -> None:
    result = Predictor([tiny_checkpoint], explain=False).predict(left_lower_study).to_dict()
    assert result["predicted_class"] in result["probabilities"]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    quant = result["quantitative"]
    assert quant["available"] is True
    assert max(quant["zones"], key=lambda z: quant["zones"][z]["lesion_ml"]) == "left lower"
    assert result["abnormal_fraction"] == pytest.approx(quant["involvement"]["total"], abs=1e-5)
