"""Small, CPU-cheap configurations of every registered model, shared by the model tests."""

from __future__ import annotations

import pytest
import torch

# name -> (create_model overrides, small input shape with batch)
SMALL: dict[str, tuple[dict, tuple[int, ...]]] = {
    "covidnet-ct2-l": ({}, (2, 3, 64, 64)),
    "covidnet-ct2-s": ({}, (2, 3, 64, 64)),
    "ai-corona": ({}, (2, 2, 3, 64, 64)),
    "covidnet-3d": ({"input_shape": (1, 32, 32, 64)}, (1, 1, 32, 32, 64)),  # instance norm needs >1 voxel
    "covidctnet-denoiser": ({"input_size": 32}, (2, 1, 32, 32)),
    "covidctnet-classifier": ({"input_shape": (1, 44, 48, 48)}, (2, 1, 44, 48, 48)),
    "covidctnet": ({"input_shape": (1, 44, 48, 48), "denoiser_width": 8}, (1, 1, 44, 48, 48)),
}


def small_model(name: str, **extra):
    from covidct.models import create_model

    overrides, _ = SMALL[name]
    torch.manual_seed(0)
    return create_model(name, **{**overrides, **extra})


def small_input(name: str, seed: int = 0) -> torch.Tensor:
    return torch.rand(SMALL[name][1], generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=sorted(SMALL))
def model_name(request) -> str:
    return request.param
