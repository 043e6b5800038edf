"""Inference backends: ONNX Runtime gives PyTorch's probabilities; auto picks and caches one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from covidct.errors import ConfigError
from covidct.models import create_model
from covidct.models.backends import OnnxBackend, TorchBackend, choose_backend, default_batch_size

SIZE = 64


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("covidnet-ct2-s", input_size=SIZE)
    with torch.no_grad():  # trained-looking BatchNorm statistics, so the classes are not all equal
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for the module (exporting takes seconds)."""
    return tmp_path_factory.mktemp("backends")


def test_onnx_probabilities_equal_torch(model: torch.nn.Module, folder: Path) -> None:
    onnx = choose_backend(model, (3, SIZE, SIZE), "onnx", folder=folder)
    assert isinstance(onnx, OnnxBackend) and onnx.path.parent == folder
    x = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    p_torch, f_torch = TorchBackend(model).run(x, 2)
    p_onnx, f_onnx = onnx.run(x, 2)
    assert p_onnx.shape == (5, 3) and f_onnx.shape == f_torch.shape
    assert np.abs(p_onnx - p_torch).max() <= 1e-4
    assert np.abs(f_onnx - f_torch).max() <= 1e-4
    assert np.abs(p_torch - p_torch[0]).max() > 1e-3  # the inputs give different outputs


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_rows_score_the_named_rows_in_their_order(model: torch.nn.Module, folder: Path, backend: str) -> None:
    """``rows`` scores those rows of the input, gathered a batch at a time from a broadcast view (the
    3 channels of a CT-2 slice share one image), as if they had been copied out first."""
    runner = TorchBackend(model) if backend == "torch" else choose_backend(model, (3, SIZE, SIZE), "onnx",
                                                                           folder=folder)
    grey = torch.rand(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    x = grey.expand(6, 3, SIZE, SIZE)  # stride 0 over the channels
    rows = [4, 0, 5, 2]
    probs, feats = runner.run(x, 3, rows)
    copied, copied_feats = runner.run(x[rows].contiguous(), 3)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs, copied, atol=1e-6)
    np.testing.assert_allclose(feats, copied_feats, atol=1e-6)
    every, _ = runner.run(x, 4)
    np.testing.assert_allclose(probs, every[rows], atol=1e-5)
    assert np.abs(probs[0] - probs[1]).max() > 1e-4  # the rows give different outputs


def test_rows_outside_the_input_are_refused(model: torch.nn.Module) -> None:
    from covidct.errors import ShapeError
    from covidct.models.inference import batch_rows

    assert [b.tolist() for b in batch_rows(5, 2)] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in batch_rows(5, 2, [3, 1, 4])] == [[3, 1], [4]]
    with pytest.raises(ShapeError, match=r"0\.\.4"):
        TorchBackend(model).run(torch.zeros(5, 3, SIZE, SIZE), 2, [1, 5])
    with pytest.raises(ShapeError, match="at least one row"):
        batch_rows(5, 2, [])
    with pytest.raises(ConfigError, match="batch_size"):
        batch_rows(5, 0)


def test_onnx_session_neither_spins_nor_plans_one_block_per_shape(model: torch.nn.Module,
                                                                  folder: Path) -> None:
    """The session options that keep a study's first batch cheap (issue 21): no memory pattern (its
    planned block touched 444 MB at 512 px, batch 8, against 268 MB without it) and no spinning
    threads (they spend the cores the lesion analysis runs on, beside the model)."""
    from covidct.models.backends import _session

    onnx = choose_backend(model, (3, SIZE, SIZE), "onnx", folder=folder)
    options = _session(str(onnx.path), 2).get_session_options()
    assert options.enable_mem_pattern is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2


def test_auto_times_once_and_reuses_the_export(model: torch.nn.Module, folder: Path) -> None:
    first = choose_backend(model, (3, SIZE, SIZE), "auto", folder=folder, threads=1)
    (record,) = folder.glob("*-1t.json")
    choice = json.loads(record.read_text())
    names = {"onnx": "onnxruntime-cpu", "torch": "pytorch-cpu"}
    assert names[choice["faster"]] == first.name and choice["torch_s"] > 0 and choice["onnx_s"] > 0
    exported = sorted(folder.glob("*.onnx"))
    again = choose_backend(model, (3, SIZE, SIZE), "auto", folder=folder, threads=1)
    assert again.name == first.name and sorted(folder.glob("*.onnx")) == exported


def test_changed_weights_get_a_new_export(model: torch.nn.Module, folder: Path) -> None:
    a = choose_backend(model, (3, SIZE, SIZE), "onnx", folder=folder)
    other = create_model("covidnet-ct2-s", input_size=SIZE).eval()
    b = choose_backend(other, (3, SIZE, SIZE), "onnx", folder=folder)
    assert a.path != b.path


def test_unknown_backend_and_batch_size() -> None:
    with pytest.raises(ConfigError, match="torch, onnx, auto"):
        choose_backend(torch.nn.Identity(), (3, SIZE, SIZE), "tensorrt")
    assert default_batch_size(2) == 8 and default_batch_size(1) == 4


def test_predict_volume_on_onnx_equals_torch(
    model: torch.nn.Module, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidct.models import load_checkpoint, save_checkpoint
    from covidct.models.inference import predict_volume
    from covidct.preprocessing import get_recipe
    from covidct.synthetic import make_phantom

    monkeypatch.setenv("COVIDCT_CACHE", str(folder))
    path = save_checkpoint(
        tmp_path / "s.ckpt",
        model,
        recipe=get_recipe("covidnet-ct2", size=SIZE).to_dict(),
        provenance={"data": "random weights (test)"},
    )
    checkpoint = load_checkpoint(path)
    volume = make_phantom("COVID-19", shape=(6, 64, 64), spacing=(6.0, 3.0, 3.0), seed=2).volume
    on_torch = predict_volume(checkpoint, volume, backend="torch")
    on_onnx = predict_volume(checkpoint, volume, backend="onnx")
    assert on_onnx.slice_probs.shape == (6, 3)
    assert np.abs(on_onnx.slice_probs - on_torch.slice_probs).max() <= 1e-4
    assert np.abs(on_onnx.probs - on_torch.probs).max() <= 1e-4


def _perturb_onnx(path: Path) -> None:
    """Add 0.5 to the largest weight tensor of an exported graph (a broken export), in place."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path))
    biggest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(biggest) + np.float32(0.5)
    biggest.CopyFrom(numpy_helper.from_array(array.astype(np.float32), biggest.name))
    onnx.save(graph, str(path))


@pytest.mark.parametrize("backend", ["onnx", "auto"])
def test_parity_failure_falls_back_to_torch_with_a_warning(model: torch.nn.Module, tmp_path: Path,
                                                            backend: str) -> None:
    from covidct.models.backends import export_backend

    path = export_backend(model, (3, SIZE, SIZE), tmp_path)
    _perturb_onnx(path)
    with pytest.warns(RuntimeWarning, match="ONNX Runtime disagrees with PyTorch"):
        chosen = choose_backend(model, (3, SIZE, SIZE), backend, folder=tmp_path, threads=1)
    assert isinstance(chosen, TorchBackend) and chosen.name == "pytorch-cpu"
    (record,) = tmp_path.glob("*-parity.json")
    result = json.loads(record.read_text())
    assert result["passed"] is False and result["max_abs_diff"] > 1e-4
    assert not list(tmp_path.glob("*t.json"))  # never timed: a failed graph is not a candidate


def test_parity_is_checked_once_per_export(model: torch.nn.Module, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from covidct.models import backends

    first = choose_backend(model, (3, SIZE, SIZE), "onnx", folder=tmp_path)
    assert isinstance(first, OnnxBackend) and first.name == "onnxruntime-cpu"
    (record,) = tmp_path.glob("*-parity.json")
    assert json.loads(record.read_text())["passed"] is True

    def fail(*_a: object) -> float:
        raise AssertionError("parity computed twice")

    monkeypatch.setattr(backends, "parity_error", fail)
    assert isinstance(choose_backend(model, (3, SIZE, SIZE), "onnx", folder=tmp_path), OnnxBackend)
