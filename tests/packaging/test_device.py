"""--device cpu|cuda|auto: cuda without a GPU is a clear error; the device and backend reach every result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from covidct.errors import ConfigError, UnknownNameError
from covidct.models.device import resolve_device

COMMANDS = [
    ["predict", "{tmp}/study"],
    ["triage", "{tmp}/study", "--db", "{tmp}/w.db"],
    ["serve", "--db", "{tmp}/w.db", "--data-dir", "{tmp}/data"],
    ["explain", "{tmp}/study", "--checkpoint", "{tmp}/s.ckpt"],
    ["dicom-listen", "--port", "0", "--db", "{tmp}/w.db", "--storage", "{tmp}/dicom"],
]


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_resolve_device(no_cuda: None) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU is visible.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(UnknownNameError, match="Did you mean 'cuda'"):
        resolve_device("cud")


@pytest.mark.parametrize("args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_cuda_without_gpu_is_a_clear_error(cli, tmp_path: Path, no_cuda: None, args: list[str]) -> None:
    (tmp_path / "study").mkdir()
    (tmp_path / "s.ckpt").write_bytes(b"")
    result = cli(*[a.format(tmp=tmp_path) for a in args], "--device", "cuda")
    assert result.exit_code == ConfigError.exit_code, result.output
    assert "no CUDA GPU is visible" in result.output
    assert "Traceback" not in result.output and "covidct bug" not in result.output
    assert not (tmp_path / "w.db").exists()  # refused before anything was created


def test_predict_records_device_and_backend(cli, tmp_path: Path) -> None:
    import json

    from tests.helpers import random_ct2s_checkpoint

    from covidct.io.dicom_write import write_dicom_series
    from covidct.synthetic import make_phantom

    random_ct2s_checkpoint(tmp_path, 64)
    volume = make_phantom("COVID-19", shape=(6, 64, 64), spacing=(6.0, 3.0, 3.0), seed=2).volume
    write_dicom_series(volume, tmp_path / "study")
    result = cli("predict", str(tmp_path / "study"), "--checkpoint", str(tmp_path / "s.ckpt"), "--out",
                 str(tmp_path / "reports"), "--no-explain", "--device", "cpu")
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["device"] == "cpu" and line["backend"] == "pytorch-cpu"  # tests set COVIDCT_BACKEND=torch
    report = json.loads(Path(line["json"]).read_text())
    assert report["device"] == "cpu" and report["backend"] == "pytorch-cpu"
