"""Forward passes at the papers' input sizes (slow on CPU: run with ``-m slow``)."""

from __future__ import annotations

import pytest
import torch

from covidct.models import create_model

FULL = [
    "covidnet-ct2-l",
    "covidnet-ct2-s",
    "ai-corona",
    "covidnet-3d",
    "covidctnet-denoiser",
    "covidctnet-classifier",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_forward_at_paper_input(name):
    torch.set_flush_denormal(True)
    model = create_model(name, **({"num_slices": 2} if name == "ai-corona" else {})).eval()
    x = torch.rand((1, *model.input_shape))
    with torch.inference_mode():
        out = model(x)
    assert torch.isfinite(out).all()
    expected = x.shape if getattr(model, "task", "") == "denoising" else (1, len(model.class_names))
    assert tuple(out.shape) == tuple(expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_covidnet_3d_training_step_on_gpu():
    model = create_model("covidnet-3d", gradient_checkpointing=True).cuda().train()
    x = torch.rand((1, *model.input_shape), device="cuda")
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
