"""Weight importers: Keras HDF5 layout conversions and the CovidCTNet importer on synthetic files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from covidct.classes import CLASSES_3
from covidct.errors import ConfigError, CorruptFileError, WeightsError
from covidct.models import create_model, load_checkpoint
from covidct.models.importers import get_importer, import_weights, list_importers, sha256_of
from covidct.models.importers.covidctnet import AUTHOR_CLASSES, output_order
from covidct.models.importers.keras_h5 import conv_kernel_to_torch, dense_kernel_to_torch, read_keras_h5


def test_conv_kernel_matches_keras_cross_correlation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6, 7, 2)).astype(np.float32)  # Keras channels-last (D, H, W, C)
    kernel = rng.normal(size=(3, 3, 3, 2, 4)).astype(np.float32)  # Keras (kd, kh, kw, in, out)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3, 3), axis=(0, 1, 2))  # (3,4,5,C,3,3,3)
    keras_out = np.einsum("dhwcijk,ijkco->dhwo", windows, kernel)
    torch_out = torch.nn.functional.conv3d(
        torch.from_numpy(x).permute(3, 0, 1, 2)[None], torch.from_numpy(conv_kernel_to_torch(kernel))
    )[0].permute(1, 2, 3, 0)
    np.testing.assert_allclose(torch_out.numpy(), keras_out, atol=1e-5)


def test_dense_after_channels_last_flatten() -> None:
    rng = np.random.default_rng(1)
    feature_map = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)  # (D, H, W, C)
    kernel = rng.normal(size=(36, 5)).astype(np.float32)
    keras_out = feature_map.reshape(-1) @ kernel
    torch_flat = feature_map.transpose(3, 0, 1, 2).reshape(-1)  # PyTorch flattens (C, D, H, W)
    weight = dense_kernel_to_torch(kernel, flatten_from=(1, 3, 3, 4))
    np.testing.assert_allclose(weight @ torch_flat, keras_out, rtol=1e-5, atol=1e-5)
    assert not np.allclose(dense_kernel_to_torch(kernel) @ torch_flat, keras_out, atol=1e-2)


def test_author_classes_map_to_covidct_order() -> None:
    assert AUTHOR_CLASSES == ("Control", "COVID-19", "CAP")
    assert CLASSES_3 == ("Normal", "Pneumonia", "COVID-19")
    assert output_order(CLASSES_3) == [0, 2, 1]


def _released_layout(rng: np.random.Generator) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Random weights in the released file's layer layout (names, shapes, order)."""
    chans = [1, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128]
    layers = [
        (f"conv3d{'' if i == 0 else f'_{i}'}", {"kernel": rng.normal(size=(3, 3, 3, chans[i], chans[i + 1]))})
        for i in range(10)
    ]
    layers += [
        ("dense", {"kernel": rng.normal(size=(1152, 32))}),
        ("dense_1", {"kernel": rng.normal(size=(32, 3))}),
    ]
    for _, weights in layers:
        weights["bias"] = rng.normal(size=weights["kernel"].shape[-1])
    return layers


def _write_keras_h5(path: Path, layers, extra_layers=("max_pooling3d", "flatten")) -> Path:
    with h5py.File(path, "w") as f:
        names = [name for name, _ in layers] + list(extra_layers)
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["keras_version"] = b"2.4.0"
        f.attrs["backend"] = b"tensorflow"
        for name, weights in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{k}:0".encode() for k in ("kernel", "bias")])
            for key in ("kernel", "bias"):
                group.create_dataset(f"{name}/{key}:0", data=weights[key].astype(np.float32))
        for name in extra_layers:
            f.create_group(name).attrs["weight_names"] = np.array([], dtype=np.float64)
    return path


def test_import_synthetic_released_layout(tmp_path: Path) -> None:
    layers = _released_layout(np.random.default_rng(2))
    source = _write_keras_h5(tmp_path / "w.h5", layers)
    read = read_keras_h5(source)
    assert read.keras_version == "2.4.0" and read.weighted_layers() == [n for n, _ in layers]
    ckpt = load_checkpoint(import_weights("covidctnet-classifier", source, tmp_path / "w.ckpt"))
    model = ckpt.model
    np.testing.assert_array_equal(
        model.blocks[2][2].weight.detach().numpy(),
        layers[5][1]["kernel"].astype(np.float32).transpose(4, 3, 0, 1, 2),
    )
    keras_out = layers[11][1]
    np.testing.assert_array_equal(
        model.fc2.bias.detach().numpy(), keras_out["bias"].astype(np.float32)[[0, 2, 1]]
    )
    assert ckpt.recipe["name"] == "covidctnet-released" and ckpt.class_names == CLASSES_3
    assert ckpt.provenance["imported_from"]["sha256"] == sha256_of(source)
    assert ckpt.provenance["imported_from"]["file"] == "w.h5"


def test_import_errors_are_typed(tmp_path: Path) -> None:
    layers = _released_layout(np.random.default_rng(3))
    with pytest.raises(WeightsError, match="11 layers with weights"):
        import_weights(
            "covidctnet-classifier", _write_keras_h5(tmp_path / "short.h5", layers[1:]), tmp_path / "x"
        )
    layers[0][1]["kernel"] = np.zeros((3, 3, 3, 2, 8))
    with pytest.raises(WeightsError, match="conv3d kernel.*expects"):
        import_weights("covidctnet-classifier", _write_keras_h5(tmp_path / "bad.h5", layers), tmp_path / "x")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CorruptFileError, match="not a readable HDF5"):
        read_keras_h5(tmp_path / "text.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError, match="layer_names"):
        read_keras_h5(tmp_path / "plain.h5")
    assert [i.name for i in list_importers()] == ["covidctnet-classifier"]
    assert get_importer("covidctnet-classifier").file_format == "keras-h5"


def test_import_weights_cli(tmp_path: Path) -> None:
    from covidct.cli.app import app
    from covidct.cli.main import load_commands

    load_commands()
    source = _write_keras_h5(tmp_path / "w.h5", _released_layout(np.random.default_rng(4)))
    ok = CliRunner().invoke(
        app, ["import-weights", "covidctnet-classifier", str(source), "--out", str(tmp_path / "c")]
    )
    assert ok.exit_code == 0, ok.output
    assert '"recipe": "covidctnet-released"' in ok.output and (tmp_path / "c").is_file()
    bad = CliRunner().invoke(
        app, ["import-weights", "covidctnet-clasifier", str(source), "--out", str(tmp_path / "d")]
    )
    assert bad.exit_code != 0 and "covidctnet-classifier" in bad.output and "Traceback" not in bad.output


def test_classifier_paddings_per_conv_and_per_pair() -> None:
    released = create_model("covidctnet-classifier", input_shape=(1, 50, 128, 128))
    first, second = released.blocks[0][0], released.blocks[0][2]
    assert (first.padding, second.padding) == ((0, 0, 0), (1, 1, 1))  # 'valid' then 'same', as released
    per_pair = create_model(
        "covidctnet-classifier", input_shape=(1, 8, 32, 32), filters=(4, 8, 8), paddings=["same"] * 3
    )
    assert per_pair.feature_shape == (1, 4, 4)
    with pytest.raises(ConfigError, match="paddings must be"):
        create_model("covidctnet-classifier", paddings=("valid", "full"))
