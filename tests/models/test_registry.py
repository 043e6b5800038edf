"""Every registered model gets these for free: attributes, forward/backward, shape checks."""

from __future__ import annotations

import json

import pytest
import torch
from tests.models.conftest import SMALL, small_input, small_model

from covidct.errors import ConfigError, ShapeError, UnknownNameError
from covidct.models import create_model, list_models

RECIPES = {"covidnet-ct2", "ai-corona", "covidnet-3d", "covidctnet"}


def test_every_registered_model_has_a_small_test_config():
    assert sorted(SMALL) == list_models()


def test_model_attributes(model_name):
    model = small_model(model_name)
    assert model.name == model_name
    json.dumps(model.config)  # JSON-able
    assert isinstance(model.class_names, tuple)
    assert isinstance(model.input_shape, tuple) and all(isinstance(v, int) for v in model.input_shape)
    assert model.recipe_name in RECIPES
    assert isinstance(model.get_submodule(model.cam_layer), torch.nn.Module)
    rebuilt = create_model(model_name, **model.config)
    assert rebuilt.config == model.config


def test_forward_backward_small_input(model_name):
    model = small_model(model_name).train()
    x = small_input(model_name)
    out = model(x)
    if getattr(model, "task", "classification") == "denoising":
        assert out.shape == x.shape
    else:
        assert out.shape == (x.shape[0], len(model.class_names))
        with torch.no_grad():
            model.eval()
            assert torch.allclose(model.forward_head(model.forward_features(x)), model(x), atol=1e-5)
            model.train()
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


def test_wrong_number_of_dims_raises_shape_error(model_name):
    model = small_model(model_name)
    x = small_input(model_name)
    with pytest.raises(ShapeError, match="expects input"):
        model(x[0])


def test_wrong_channels_raises_shape_error(model_name):
    model = small_model(model_name)
    x = small_input(model_name)
    channel_axis = 2 if model_name == "ai-corona" else 1
    bad = torch.cat([x, x], dim=channel_axis)
    with pytest.raises(ShapeError, match="channel"):
        model(bad)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError) as info:
        create_model("covidnet-ct2-m")
    msg = str(info.value)
    assert "Did you mean 'covidnet-ct2-" in msg and "covidctnet-classifier" in msg


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("covidnet-ct2-s", num_clases=2)


@pytest.mark.parametrize("name", ["covidnet-ct2-s", "covidnet-3d", "covidctnet-classifier"])
def test_num_classes_override(name):
    overrides = SMALL[name][0]
    model = create_model(name, num_classes=3, **overrides)
    assert len(model.class_names) == 3
    assert model(small_input(name)).shape[-1] == 3


def test_covidnet_3d_defaults_to_pneumonia_vs_covid():
    model = small_model("covidnet-3d")
    assert model.class_names == ("Pneumonia", "COVID-19")


def test_channels_last_matches_contiguous():
    model = small_model("covidnet-ct2-s").eval()
    x = small_input("covidnet-ct2-s")
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)


def test_gradient_checkpointing_gives_same_gradients():
    x = small_input("covidnet-3d")
    tiny = {"block_config": (2, 2, 2, 2)}  # same code path as (6, 12, 64, 48), 1/30 of the work
    plain = small_model("covidnet-3d", **tiny).train()
    ckpt = small_model("covidnet-3d", gradient_checkpointing=True, **tiny).train()
    ckpt.load_state_dict(plain.state_dict())
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    g1 = plain.fc.weight.grad
    g2 = ckpt.fc.weight.grad
    assert torch.allclose(g1, g2, atol=1e-5)


@pytest.mark.parametrize("name", ["covidnet-ct2-s"])
def test_fuse_conv_bn_keeps_outputs(name):
    from covidct.models.optimize import fuse_conv_bn

    model = small_model(name)
    x = small_input(name)
    with torch.no_grad():
        for _ in range(2):
            model.train()(x)  # non-trivial running statistics
        model.eval()
        fused = fuse_conv_bn(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        assert torch.allclose(model(x), fused(x), atol=1e-4)


def test_covidnet_3d_refuses_axes_shorter_than_its_downsampling():
    """A 16-slice input would vanish inside the network: a clear error, not a PyTorch RuntimeError."""
    with pytest.raises(ConfigError, match="at least 32 voxels along every axis"):
        create_model("covidnet-3d", input_shape=(1, 16, 64, 64))
    model = small_model("covidnet-3d").eval()
    with pytest.raises(ShapeError, match=r"\(16, 32, 64\)"):
        model(torch.zeros(1, 1, 16, 32, 64))


def test_loading_a_ct2_checkpoint_does_not_import_monai(tmp_path) -> None:
    """Loading a checkpoint imports every registered model's module; MONAI (~2 s to import, the backbones
    of ai-corona and COVIDNet 3D) is imported only when one of those models is built, so `covidct predict`,
    a server or a Ray worker with a CT-2 checkpoint starts ~2 s sooner (issue 21)."""
    import subprocess
    import sys

    from tests.helpers import random_ct2s_checkpoint

    random_ct2s_checkpoint(tmp_path, 32)
    probe = ("import sys; from covidct.models import load_checkpoint, list_models; "
             f"load_checkpoint({str(tmp_path / 's.ckpt')!r}); "
             "print(len(list_models()), 'monai' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    out = run.stdout.split()
    assert int(out[0]) >= 5 and out[1] == "False"  # every model registered, MONAI not imported

