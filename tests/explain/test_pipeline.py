"""`explain()` on registry models (small sizes) and the `covidct explain` CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from covidct.errors import ExplainError
from covidct.explain import explain, write_explanation
from covidct.models import create_model, load_checkpoint, save_checkpoint
from covidct.preprocessing import get_recipe
from covidct.synthetic import make_phantom

SHAPE = (16, 96, 96)
SPACING = (5.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("COVID-19", shape=SHAPE, spacing=SPACING, seed=0)


@pytest.fixture(scope="module")
def ct2_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ct2s.pt"
    model = create_model("covidnet-ct2-s", input_size=64)
    save_checkpoint(path, model, recipe=get_recipe("covidnet-ct2", size=64))
    return path


def test_explain_slice_model_gradcam(phantom, ct2_checkpoint, tmp_path):
    exp = explain(load_checkpoint(ct2_checkpoint), phantom.volume, method="gradcam", slices="5,8")
    assert exp.heatmap.shape == SHAPE and exp.heatmap.dtype == np.float32
    assert exp.slices == [5, 8]
    assert not exp.heatmap[0].any() and 0.0 <= exp.heatmap.min() <= exp.heatmap.max() <= 1.0
    assert exp.target_class in exp.class_names and 0.0 <= exp.probability <= 1.0
    assert {"randomisation_correlation", "deletion_auc", "insertion_auc"} <= set(exp.sanity)
    assert exp.lung_volume_ml["total"] > 0 and "bilateral" in exp.description
    files = write_explanation(exp, phantom.volume, tmp_path)
    summary = json.loads(open(files["summary"]).read())
    assert summary["method"] == "gradcam" and summary["quantification"]["hu_rule"]["total"]["fraction"] > 0
    assert (tmp_path / "overlays" / "slice_0005.png").is_file() and (tmp_path / "montage.png").is_file()
    assert "slice_0008.png" in (tmp_path / "index.html").read_text()
    import nibabel as nib

    assert nib.load(files["heatmap"]).shape[:3] == (SHAPE[2], SHAPE[1], SHAPE[0])


def test_explain_3d_model_gradcam_and_cam_error(phantom, tmp_path):
    path = tmp_path / "c3d.pt"
    torch.manual_seed(0)  # a random 3D net can give an all-zero Grad-CAM for some seeds
    model = create_model("covidnet-3d", input_shape=(1, 32, 64, 64), block_config=(1, 1, 1, 1))
    save_checkpoint(path, model, recipe=get_recipe("covidnet-3d", depth=32, resize_to=64, crop=64))
    ckpt = load_checkpoint(path)
    exp = explain(ckpt, phantom.volume, method="gradcam", sanity=False, lungs=False)
    assert exp.heatmap.shape == SHAPE and exp.heatmap.max() == pytest.approx(1.0, abs=1e-3)
    assert len(exp.slices) >= 1
    with pytest.raises(ExplainError, match="3D model"):
        explain(ckpt, phantom.volume, method="cam", sanity=False, lungs=False)


def test_bad_slices_and_target(phantom, ct2_checkpoint):
    ckpt = load_checkpoint(ct2_checkpoint)
    with pytest.raises(ExplainError, match="outside"):
        explain(ckpt, phantom.volume, slices="99", sanity=False, lungs=False)
    with pytest.raises(ExplainError, match="not one of"):
        explain(ckpt, phantom.volume, slices="1", target="Flu", sanity=False, lungs=False)


def test_cli_explain_end_to_end(phantom, ct2_checkpoint, tmp_path):
    import covidct.cli.explain_commands  # noqa: F401 - registers the command
    from covidct.cli.app import app
    from covidct.cli.main import load_commands

    load_commands()  # with other sub-commands registered typer needs the command name
    if len(app.registered_commands) == 1:  # a lone command is invoked without its name
        app.command("noop-for-tests", hidden=True)(lambda: None)
    from covidct.io import write_nifti

    scan = tmp_path / "scan.nii.gz"
    write_nifti(phantom.volume, scan)
    out = tmp_path / "out"
    args = [
        "explain",
        "--checkpoint",
        str(ct2_checkpoint),
        str(scan),
        "--method",
        "occlusion",
        "--slices",
        "6",
        "--out",
        str(out),
        "--no-sanity",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "occlusion" and summary["slices"] == [6]
    assert (out / "index.html").is_file() and (out / "heatmap.nii.gz").is_file()
    bad = CliRunner().invoke(app, ["explain", "--checkpoint", str(ct2_checkpoint), str(scan), "-m", "shap"])
    assert bad.exit_code != 0 and "gradcam" in bad.output


def test_explain_ai_corona_cam_covers_the_middle_slices(phantom, tmp_path):
    torch.manual_seed(0)  # an untrained net's CAM for its predicted class can be all negative (-> 0)
    path = tmp_path / "ac.pt"
    save_checkpoint(
        path, create_model("ai-corona", input_size=64, num_slices=8), recipe=get_recipe("ai-corona", size=64)
    )
    exp = explain(load_checkpoint(path), phantom.volume, method="cam", sanity=False, lungs=False)
    assert exp.heatmap.shape == SHAPE
    assert not exp.heatmap[:4].any() and not exp.heatmap[12:].any()  # middle 50 % only
    assert exp.heatmap[4:12].max() > 0.9


@pytest.mark.slow
def test_explain_covidctnet_residual(phantom, tmp_path):
    path = tmp_path / "cn.pt"
    model = create_model("covidctnet", input_shape=(1, 48, 64, 64), denoiser_width=8)
    save_checkpoint(path, model, recipe=get_recipe("covidctnet", size=64, depth=48))
    exp = explain(load_checkpoint(path), phantom.volume, method="residual", sanity=False, lungs=False)
    assert exp.heatmap.shape == SHAPE and exp.heatmap.max() > 0.5
    assert exp.target_class in exp.class_names


class RightHalfModel(torch.nn.Module):
    """A slice classifier that looks only at the right half of its input (image right = patient left)."""

    unit = "slice"
    task = "classification"
    cam_layer = "features.1"
    recipe_name = "covidnet-ct2"

    def __init__(self, size: int) -> None:
        super().__init__()
        from tests.explain.conftest import LOGIT_SCALE, Gate

        mask = torch.zeros(1, 1, size, size)
        mask[..., size // 2 + 2 :] = 1.0
        conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            conv.weight.fill_(1.0 / 27)
            conv.bias.zero_()
        self.features = torch.nn.Sequential(Gate(mask), conv, torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]) * LOGIT_SCALE)
            self.fc.bias.zero_()
        self.class_names = ("Normal", "COVID-19")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_explanation_lands_where_the_model_looks(phantom):
    """Model space right half -> volume right half (patient left): explain keeps sides on the way back."""
    from covidct.models import Checkpoint

    size = 32
    model = RightHalfModel(size).eval()
    ckpt = Checkpoint(model=model, model_name="right-half (test)", class_names=model.class_names,
                      recipe=get_recipe("covidnet-ct2", size=size).to_dict())
    exp = explain(ckpt, phantom.volume, method="gradcam", slices="8", target="COVID-19", sanity=False,
                  lungs=False)
    heat = exp.heatmap[8]
    assert heat.sum() > 0 and not exp.heatmap[7].any()
    assert heat[:, SHAPE[2] // 2 :].sum() >= 0.95 * heat.sum()
