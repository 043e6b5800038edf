"""Small builders shared by several test modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def plane_ellipse(shape_yx: tuple[int, int], pixel_mm: tuple[float, float], cy: float, cx: float,
                  ry: float, rx: float) -> np.ndarray:
    """bool (y, x): the ellipse with centre (``cy``, ``cx``) mm from the image centre and semi-axes
    (``ry``, ``rx``) mm, on an image of ``shape_yx`` pixels of ``pixel_mm`` (phantom chests)."""
    y, x = np.mgrid[: shape_yx[0], : shape_yx[1]].astype(float)
    y, x = (y - shape_yx[0] / 2) * pixel_mm[0], (x - shape_yx[1] / 2) * pixel_mm[1]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
