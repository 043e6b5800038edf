"""Heatmap methods on tiny CNNs whose decision depends on one known region."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from covidct.errors import ExplainError, UnknownNameError
from covidct.explain.methods import compute_heatmap, list_methods, make_regions

from .conftest import REGION_2D, REGION_3D, NoHead3D

LOCALISING_2D = ["gradcam", "cam", "occlusion", "critical-factors", "integrated-gradients"]
INSIDE_MIN = 0.5
OUTSIDE_MAX = 0.05


def _inside_outside(heat: np.ndarray, region: tuple[slice, ...]) -> tuple[float, float]:
    inside = np.zeros(heat.shape, bool)
    inside[region] = True
    return float(heat[inside].mean()), float(heat[~inside].mean())


@pytest.mark.parametrize("method", LOCALISING_2D)
def test_2d_methods_localise_the_region(method, model2d, x2d):
    result = compute_heatmap(method, model2d, x2d)
    assert result.heatmap.shape == (2, 32, 32)
    assert result.heatmap.dtype == np.float32
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0
    assert list(result.target) == [1, 1]
    for heat in result.heatmap:
        inside, outside = _inside_outside(heat, REGION_2D)
        assert inside > INSIDE_MIN, (method, inside)
        assert outside < OUTSIDE_MAX, (method, outside)


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "critical-factors"])
def test_3d_methods_localise_the_region(method, model3d, x3d):
    result = compute_heatmap(method, model3d, x3d, patch=4, stride=2)
    assert result.heatmap.shape == (1, 16, 16, 16)
    inside, outside = _inside_outside(result.heatmap[0], REGION_3D)
    assert inside > 2 * outside, (method, inside, outside)


def test_critical_factors_report_keeps_decision(model2d, x2d):
    result = compute_heatmap("critical-factors", model2d, x2d[:1])
    item = result.extra["items"][0]
    assert item["decision_kept"]
    assert item["prob_kept"] > 0.5 > item["prob_removed"]
    assert 1 <= len(item["selected"]) <= 8


def test_regions_cover_the_input(x2d, x3d):
    regions2d = make_regions(x2d[:1], "NCHW", 20)
    assert regions2d.shape == (32, 32) and regions2d.min() == 0
    assert make_regions(x3d, "NCDHW").max() == 63


def test_explicit_target_is_used(model2d, x2d):
    assert list(compute_heatmap("gradcam", model2d, x2d, target=0).target) == [0, 0]
    with pytest.raises(ExplainError, match="out of range"):
        compute_heatmap("gradcam", model2d, x2d, target=5)


def test_unknown_method_lists_valid_names(model2d, x2d):
    with pytest.raises(UnknownNameError) as info:
        compute_heatmap("gradcamm", model2d, x2d)
    assert "gradcam" in str(info.value) and "occlusion" in str(info.value)
    assert set(list_methods()) >= {"gradcam", "cam", "occlusion", "critical-factors", "residual"}


def test_gradcam_without_cam_layer_is_an_explain_error(x2d):
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ExplainError, match="cam_layer"):
        compute_heatmap("gradcam", plain, x2d)


def test_cam_rejects_3d_and_headless_models(model3d, x3d):
    with pytest.raises(ExplainError, match="linear head"):
        compute_heatmap("cam", NoHead3D(), x3d)
    with pytest.raises(ExplainError, match="3D model"):
        compute_heatmap("cam", model3d, x3d)


def test_residual_needs_a_denoiser(model2d, x2d):
    with pytest.raises(ExplainError, match="denoiser"):
        compute_heatmap("residual", model2d, x2d)


def test_residual_of_a_denoiser_is_abs_difference():
    class Blur(nn.Module):
        task = "denoising"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x, 3, 1, 1)

    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    heat = compute_heatmap("residual", Blur(), x).heatmap[0]
    assert heat.shape == (16, 16) and heat[8, 8] == 1.0 and heat[0, 0] == 0.0


def test_bad_input_rank_is_an_explain_error(model2d):
    with pytest.raises(ExplainError, match="shape"):
        compute_heatmap("gradcam", model2d, torch.zeros(32, 32))


def test_gradcam_backward_stops_at_the_cam_layer(model2d, x2d):
    """Grad-CAM needs d logit / d activation at the cam layer only: nothing below it is
    back-propagated (the conv before the cam layer sees no gradient), frozen weights give the same
    map, and the map is the one the full backward pass gives."""
    reached: list[str] = []
    below = model2d.features[1]  # the conv under the cam layer ("features.2", the ReLU)
    handle = below.register_full_backward_hook(lambda *_: reached.append("conv"))
    try:
        result = compute_heatmap("gradcam", model2d, x2d, 1)
    finally:
        handle.remove()
    assert reached == []
    for p in model2d.parameters():
        p.requires_grad_(False)
    frozen = compute_heatmap("gradcam", model2d, x2d, 1)
    assert np.array_equal(frozen.heatmap, result.heatmap)
    for p in model2d.parameters():
        p.requires_grad_(True)
    # the reference: the full backward pass, gradient taken at the cam layer's output
    acts: dict[str, torch.Tensor] = {}
    hook = model2d.features[2].register_forward_hook(lambda _m, _i, out: acts.setdefault("a", out))
    try:
        logits = model2d(x2d)
        acts["a"].retain_grad()
        logits[:, 1].sum().backward()
    finally:
        hook.remove()
        model2d.zero_grad(set_to_none=True)
    weights = acts["a"].grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * acts["a"].detach()).sum(1))
    reference = torch.nn.functional.interpolate(cam[:, None], size=x2d.shape[2:], mode="bilinear",
                                                align_corners=False)[:, 0].numpy()
    peak = reference.reshape(len(reference), -1).max(1)[:, None, None]
    np.testing.assert_allclose(result.heatmap, reference / peak, atol=1e-6)


def test_gradcam_keeps_no_activations_below_the_cam_layer(model2d, x2d):
    """The layers under the cam layer save nothing for the backward pass (it never reaches them): with
    the parameters' graph recorded, 3 CT-2 S slices at 512 px touched ~715 MB (issue 21). The
    parameters' ``requires_grad`` flags come back as they were, frozen ones included."""
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    frozen = next(iter(model2d.features[1].parameters()))
    frozen.requires_grad_(False)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            compute_heatmap("gradcam", model2d, x2d, 1)
        flags = [p.requires_grad for p in model2d.parameters()]
    finally:
        frozen.requires_grad_(True)
    below = model2d.features[0](x2d)  # the first conv's output: saved by a full graph
    assert sum(saved) < below.numel() * below.element_size()
    assert flags == [p is not frozen for p in model2d.parameters()]
