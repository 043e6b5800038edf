"""Small builders shared by several test modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from covidct.models import Checkpoint, create_model, load_checkpoint, save_checkpoint
from covidct.preprocessing import get_recipe


def random_ct2s_checkpoint(
    folder: Path, size: int, *, adjust: Callable[[torch.nn.Module], None] | None = None
) -> Checkpoint:
    """A COVID-Net CT-2 S checkpoint with seeded random weights at ``size`` px (its recipe too), saved
    in ``folder`` and loaded back; ``adjust(model)`` may change the weights before saving."""
    torch.manual_seed(0)
    model = create_model("covidnet-ct2-s", input_size=size)
    if adjust is not None:
        with torch.no_grad():
            adjust(model)
    path = save_checkpoint(folder / "s.ckpt", model,
                           recipe=get_recipe("covidnet-ct2", size=size).to_dict(),
                           provenance={"data": "random weights (test)"})
    return load_checkpoint(path)
