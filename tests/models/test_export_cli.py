"""`covidct models --json`, `covidct export`, and ONNX round trips."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tests.models.conftest import small_model
from typer.testing import CliRunner

import covidct.cli.model_commands  # noqa: F401  (registers the commands)
from covidct.cli.app import app
from covidct.models import list_models, save_checkpoint
from covidct.models.export import export_onnx

runner = CliRunner()


def _calibrate_bn(model: torch.nn.Module, x: torch.Tensor) -> None:
    """A few train-mode passes so eval-mode BatchNorm uses data statistics (as after training)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    model.eval()


def test_models_json_lists_every_model():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list_models()
    for row in rows:
        assert {"name", "params", "gmacs", "gflops", "input_shape"} <= set(row)
        assert row["gflops"] == pytest.approx(2 * row["gmacs"], rel=1e-3)
    s = next(r for r in rows if r["name"] == "covidnet-ct2-s")
    assert s["input_shape"] == [3, 512, 512]


def test_models_table():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "covidnet-ct2-l" in result.output


def test_onnx_round_trip_covidnet_ct2_s(tmp_path):
    model = small_model("covidnet-ct2-s")
    _calibrate_bn(model, torch.rand(4, 3, 64, 64))
    path = tmp_path / "s.onnx"
    diff = export_onnx(model, path, input_shape=(3, 64, 64))
    assert diff < 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 96, 96)  # other batch size and in-plane size
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(want[0] - want[1]).max() > 0  # outputs depend on the input


def test_export_command(tmp_path):
    model = small_model("covidctnet-classifier")
    ckpt = save_checkpoint(tmp_path / "c.pt", model, recipe={"name": "covidctnet"})
    out = tmp_path / "c.onnx"
    result = runner.invoke(
        app, ["export", "covidctnet-classifier", "--checkpoint", str(ckpt), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.output and out.is_file()


def test_export_command_wrong_model(tmp_path):
    ckpt = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe={"name": "covidnet-ct2"})
    result = runner.invoke(
        app, ["export", "covidnet-ct2-l", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code != 0
    assert "covidnet-ct2-l" in result.output
