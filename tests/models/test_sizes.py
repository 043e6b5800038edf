"""Published sizes: CovidCTNet classifier exactly, COVID-Net CT-2 L/S within tolerance, DenseNet-264."""

from __future__ import annotations

import pytest
import torch

from covidct.models import count_flops, count_macs, count_params, create_model

PAPER_INPUT = (3, 512, 512)
CT2_PUBLISHED = {  # name -> (parameters, FLOPs) from Gunraj et al., COVID-Net CT-2
    "covidnet-ct2-l": (1_399_380, 4.18e9),
    "covidnet-ct2-s": (447_570, 1.94e9),
}
PARAM_TOLERANCE = 0.05
FLOP_TOLERANCE = 0.10


def test_covidctnet_classifier_matches_released_model():
    model = create_model("covidctnet-classifier", input_shape=(1, 50, 128, 128))
    assert model.num_flat == 1_152
    assert count_params(model) == 920_715
    with torch.no_grad():
        features = model.forward_features(torch.zeros(1, 1, 50, 128, 128))
    assert features.flatten(1).shape[1] == 1_152


def test_covidctnet_classifier_flatten_follows_input_shape():
    model = create_model("covidctnet-classifier")
    assert model.input_shape == (1, 50, 240, 240)
    assert model.num_flat == 128 * 1 * 7 * 7


@pytest.mark.parametrize("name", sorted(CT2_PUBLISHED))
def test_covidnet_ct2_size_matches_paper(name):
    params, flops = CT2_PUBLISHED[name]
    with torch.device("meta"):
        model = create_model(name)
    assert model.input_shape == PAPER_INPUT
    assert abs(count_params(model) / params - 1) < PARAM_TOLERANCE
    assert abs(count_flops(model, PAPER_INPUT) / flops - 1) < FLOP_TOLERANCE


def test_mac_counter_on_a_known_layer():
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 2)
    )
    assert count_macs(conv, (3, 4, 4)) == 8 * 16 * 27 + 2 * 128
    depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(depthwise, (8, 4, 4)) == 8 * 16 * 9


def test_covidnet_3d_is_densenet264():
    with torch.device("meta"):
        model = create_model("covidnet-3d")
    blocks = [m for n, m in model.features.named_children() if n.startswith("denseblock")]
    assert [len(b) for b in blocks] == [6, 12, 64, 48]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and not any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    assert model.input_shape == (1, 64, 384, 384)
