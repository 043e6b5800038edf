"""CovidCTNet pieces (Perlin noise, ConvLSTM, residuals) and ai-corona (mask, CAM maps, weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.models.conftest import small_input, small_model

from covidct.errors import ShapeError, WeightsError
from covidct.models import create_model
from covidct.models.covidctnet import BiConvLSTM2D, residual_map
from covidct.preprocessing.augment import perlin_noise


def test_perlin_noise_is_seeded_and_bounded():
    a = perlin_noise((64, 96), scale=16, octaves=3, seed=1)
    b = perlin_noise((64, 96), scale=16, octaves=3, seed=1)
    c = perlin_noise((64, 96), scale=16, octaves=3, seed=2)
    assert a.dtype == np.float32 and a.shape == (64, 96)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.05
    unit = perlin_noise((3, 32, 32), scale=8, seed=0, unit_range=True)
    assert unit.shape == (3, 32, 32) and unit.min() >= 0 and unit.max() <= 1
    assert not np.array_equal(unit[0], unit[1])


def test_perlin_noise_rejects_bad_shape():
    with pytest.raises(ShapeError):
        perlin_noise((4,), scale=2)


def test_perlin_noise_is_smooth_at_large_scale():
    noise = perlin_noise((128, 128), scale=64, octaves=1, seed=0)
    assert np.abs(np.diff(noise, axis=0)).max() < 0.1


def test_bidirectional_convlstm_shape():
    lstm = BiConvLSTM2D(8, 4)
    out = lstm(torch.rand(2, 2, 8, 16, 16))
    assert out.shape == (2, 8, 16, 16)


def test_residual_map_and_denoiser_range():
    denoiser = small_model("covidctnet-denoiser").eval()
    slices = small_input("covidctnet-denoiser")
    with torch.no_grad():
        recon = denoiser(slices)
        res = residual_map(denoiser, slices, batch_size=1)
    assert recon.min() >= 0 and recon.max() <= 1
    assert torch.allclose(res, slices - recon, atol=1e-6)


def test_denoiser_rejects_sizes_not_divisible_by_8():
    with pytest.raises(ShapeError, match="divisible by 8"):
        small_model("covidctnet-denoiser")(torch.rand(1, 1, 36, 36))


def test_denoiser_base_width_64_option():
    model = create_model("covidctnet-denoiser", base_width=64, input_size=16)
    assert model.encoders[0][0].out_channels == 64


def test_classifier_rejects_other_input_size():
    model = small_model("covidctnet-classifier")
    with pytest.raises(ShapeError, match="was built for input"):
        model(torch.rand(1, 1, 44, 56, 56))


def test_pipeline_classifies_the_residual():
    model = small_model("covidctnet").eval()
    x = small_input("covidctnet")
    with torch.no_grad():
        res = model.residuals(x)
        direct = model.classifier(res)
        assert torch.allclose(model(x), direct, atol=1e-6)


def test_ai_corona_mask_ignores_padded_slices():
    model = small_model("ai-corona").eval()
    x = small_input("ai-corona")
    padded = torch.cat([x[:1], torch.rand(1, 1, 3, 64, 64)], dim=1)  # 3 slices, last is padding
    mask = torch.tensor([[True, True, False]])
    with torch.no_grad():
        assert torch.allclose(model(padded, mask), model(x[:1]), atol=1e-5)
        maps = model.slice_feature_maps(x)
    assert maps.shape == (4, 1536, 2, 2)
    with pytest.raises(ShapeError, match="mask"):
        model(x, torch.ones(2, 5, dtype=torch.bool))


def test_ai_corona_weights_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("ai-corona", weights=str(tmp_path / "b3.pth"))


def test_ai_corona_weights_round_trip_and_mismatch(tmp_path):
    source = small_model("ai-corona")
    good = tmp_path / "b3.pth"
    torch.save(source.backbone.state_dict(), good)
    loaded = create_model("ai-corona", weights=str(good))
    key = "_conv_stem.weight"
    assert torch.equal(loaded.backbone.state_dict()[key], source.backbone.state_dict()[key])
    bad = tmp_path / "bad.pth"
    state = source.backbone.state_dict()
    state[key] = torch.zeros(1, 3, 3, 3)
    del state["_bn0.weight"]
    torch.save(state, bad)
    with pytest.raises(WeightsError, match=r"_bn0.weight.*shape"):
        create_model("ai-corona", weights=str(bad))


def test_ai_corona_checkpoint_does_not_need_the_weights_file(tmp_path):
    from covidct.models import load_checkpoint, save_checkpoint

    weights = tmp_path / "b3.pth"
    torch.save(small_model("ai-corona").backbone.state_dict(), weights)
    model = create_model("ai-corona", weights=str(weights))
    path = save_checkpoint(tmp_path / "a.pt", model, recipe={"name": "ai-corona"})
    weights.unlink()
    ckpt = load_checkpoint(path)
    key = "backbone._conv_stem.weight"
    assert torch.equal(ckpt.model.state_dict()[key], model.state_dict()[key])
