"""The Predictor on a synthetic DICOM study, the operating-point decision, ensembles, the CLI report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from covidct import RESEARCH_USE_STATEMENT
from covidct.errors import CheckpointError
from covidct.service.predictor import Predictor, decide


def test_decide_uses_the_threshold() -> None:
    names = ["Normal", "Pneumonia", "COVID-19"]
    probs = np.array([0.5, 0.2, 0.3])
    assert decide(probs, names, None)[0] == "Normal"
    cls, decision = decide(probs, names, 0.25)
    assert cls == "COVID-19" and decision["positive"] and decision["rule"] == "threshold"
    assert decide(probs, names, 0.35)[0] == "Normal"


def test_predict_result_is_complete_and_json_able(predictor: Predictor, one_study: Path) -> None:
    result = predictor.predict(one_study)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["series_uid"] and data["study_uid"]
    assert data["model_name"] == "covidnet-ct2-s" and data["model_version"].startswith("test+")
    assert sum(data["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert data["decision"]["threshold"] == pytest.approx(0.3)
    assert len(data["slice_scores"]) == data["num_slices"] == 16
    assert data["key_slices"] and all(result.overlays[k][:4] == b"\x89PNG" for k in data["key_slices"])
    assert set(data["timings"]) >= {"read", "preprocess", "model", "explain", "report", "total"}
    assert data["has_heatmap"] and result.heatmap.shape == (16, 96, 96)
    assert not any("explanation" in w for w in data["warnings"])
    assert set(np.nonzero(result.heatmap.any(axis=(1, 2)))[0].tolist()) == set(data["key_slices"])


def test_ensemble_averages_and_checks_classes(tiny_checkpoint: Path, one_study: Path) -> None:
    single = Predictor([tiny_checkpoint], explain=False).predict(one_study)
    double = Predictor([tiny_checkpoint, tiny_checkpoint], explain=False).predict(one_study)
    assert double.probabilities == pytest.approx(single.probabilities, abs=1e-5)
    assert double.model_name == "covidnet-ct2-s+covidnet-ct2-s"
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor(["/nonexistent.ckpt"])


def test_ensemble_refuses_different_classes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from covidct.models import create_model, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    binary = create_model("covidnet-ct2-s", num_classes=2)
    other = tmp_path / "binary.ckpt"
    save_checkpoint(other, binary, recipe=ckpt.recipe, provenance={"code_version": "test"})
    assert list(load_checkpoint(other).class_names) != list(ckpt.class_names)
    with pytest.raises(CheckpointError, match="disagree on classes"):
        Predictor([tiny_checkpoint, other])


def test_cli_predict_writes_json_and_html(tiny_checkpoint: Path, predictor: Predictor, one_study: Path,
                                          tmp_path: Path) -> None:
    from covidct.cli.main import app, load_commands

    load_commands()
    out = tmp_path / "reports"
    res = CliRunner().invoke(app, ["predict", str(one_study), "--checkpoint", str(tiny_checkpoint),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    report = json.loads(Path(line["json"]).read_text())
    html = Path(line["report"]).read_text()
    assert RESEARCH_USE_STATEMENT in html and "Per-slice COVID-19 score" in html
    assert "data:image/png;base64," in html
    direct = predictor.predict(one_study).to_dict()
    assert report["probabilities"] == pytest.approx(direct["probabilities"], abs=1e-5)


def test_cli_reports_errors_without_traceback(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from covidct.cli.main import app, load_commands

    load_commands()
    args = ["predict", str(tmp_path / "missing"), "--checkpoint", str(tiny_checkpoint)]
    res = CliRunner().invoke(app, args)
    output = " ".join(res.output.split())
    assert res.exit_code != 0 and "does not exist" in output and "Traceback" not in output


def test_model_stage_matches_predict_volume(tiny_checkpoint: Path, one_study: Path) -> None:
    """The Predictor goes through predict_volume; its numbers must equal a direct call."""
    from covidct.io import read_volume
    from covidct.models import load_checkpoint
    from covidct.models.inference import predict_volume
    from covidct.quant import analyse_ct, lung_slice_mask

    volume = read_volume(one_study)
    analysis = analyse_ct(volume)  # the Predictor scores the slices its lungs show only
    lung = lung_slice_mask(analysis.lung_labels, analysis.spacing)
    reference = predict_volume(load_checkpoint(tiny_checkpoint), volume, informative=lung)
    result = Predictor([tiny_checkpoint], explain=False).predict(volume)
    assert list(result.probabilities.values()) == pytest.approx(list(reference.probs), abs=1e-5)
    covid = list(reference.class_names).index("COVID-19")
    expected = np.nan_to_num(reference.slice_probs[:, covid])  # slices without lung show 0
    assert result.slice_scores == pytest.approx(list(expected), abs=1e-5)


def test_a_broken_explain_path_is_an_error_not_a_warning(tiny_checkpoint: Path, one_study: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `ExplainError` (a method the model cannot support) becomes a warning; a bug propagates."""
    import covidct.service.predictor as predictor_module
    from covidct.errors import ExplainError

    def broken(*_args, **_kwargs):
        raise IndexError("heatmap row out of range")

    monkeypatch.setattr(predictor_module, "explain", broken)
    with pytest.raises(IndexError, match="out of range"):
        Predictor([tiny_checkpoint]).predict(one_study)

    def unsupported(*_args, **_kwargs):
        raise ExplainError("CAM needs a 2D model")

    monkeypatch.setattr(predictor_module, "explain", unsupported)
    with pytest.warns(RuntimeWarning, match="CAM needs"):
        result = Predictor([tiny_checkpoint]).predict(one_study)
    assert result.heatmap is None and any("CAM needs" in w for w in result.warnings)


def test_warm_up_runs_a_full_batch_so_the_backend_memory_is_sized_before_the_first_study(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime sizes its working memory (arena) on the largest batch it has seen: a warm-up on one
    slice left ~400 MB (batch 8, 512 px) to be allocated during the first study (issue 21)."""
    from tests.helpers import random_ct2s_checkpoint

    from covidct.service import predictor as predictor_module

    seen: list[tuple[int, int]] = []
    choose = predictor_module.choose_backend

    def recording(*args, **kwargs):
        backend = choose(*args, **kwargs)
        run = backend.run

        def run_and_record(x, batch_size):
            seen.append((int(np.shape(x)[0]), int(batch_size)))
            return run(x, batch_size)

        backend.run = run_and_record
        return backend

    monkeypatch.setattr(predictor_module, "choose_backend", recording)
    pred = Predictor([random_ct2s_checkpoint(tmp_path, 32)], backend="torch", batch_size=5, explain=False)
    pred.warm_up()
    assert seen == [(5, 5)]


def test_importing_the_predictor_and_the_cli_does_not_import_scipy_stats() -> None:
    """scipy.stats (~0.4 s to import) serves the evaluation's intervals and tests and the explanation
    sanity checks, none of which a study runs: importing the Predictor and the CLI leaves it out, so
    `covidct predict`, a server and a Ray worker start sooner (issue 21: one-shot predict 10.6 -> 10.1 s);
    the statistics still import it when they are computed."""
    import subprocess
    import sys

    probe = ("import sys; import covidct.service.predictor, covidct.cli.main, covidct.evaluation; "
             "print('scipy.stats' in sys.modules); "
             "from covidct.evaluation import wilson_interval; wilson_interval(3, 10); "
             "print('scipy.stats' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "True"]
