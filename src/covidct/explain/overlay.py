"""Overlay rendering: heatmaps in [0, 1] as RGB over a grey slice, montages.

Windows and the colour map come from `covidct.preprocessing.window` (one module for explain and the
service)."""

from __future__ import annotations

import numpy as np

from covidct.errors import ExplainError
from covidct.preprocessing.window import colormap, window_to_uint8

__all__ = ["DEFAULT_ALPHA", "MIN_SHOWN_HEAT", "colormap", "montage", "overlay_rgb", "window_to_uint8"]

DEFAULT_ALPHA = 0.45
MIN_SHOWN_HEAT = 0.05
"""Heat below this is not drawn (the grey slice shows through)."""


def overlay_rgb(gray_uint8: np.ndarray, heatmap01: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Blend a heatmap over a grey image.

    Args:
        gray_uint8: (H, W) uint8 grey image (e.g. from `window_to_uint8`).
        heatmap01: (H, W) float heat in [0, 1] (same shape; values outside are clipped).
        alpha: opacity of the heat colour where heat is 1; it scales with the heat so cold areas
            stay grey, and heat below `MIN_SHOWN_HEAT` is not drawn.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    gray = np.asarray(gray_uint8)
    heat = np.asarray(heatmap01, dtype=np.float32)
    if gray.ndim != 2 or heat.shape != gray.shape:
        raise ExplainError(
            f"overlay_rgb needs a 2D grey image and a heatmap of the same shape; got {gray.shape} and "
            f"{heat.shape}. Resize the heatmap to the image first."
        )
    if not 0.0 <= alpha <= 1.0:
        raise ExplainError(f"overlay alpha must be in [0, 1], got {alpha}.")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    base = np.repeat(gray.astype(np.float32)[..., None] / 255.0, 3, axis=-1)
    weight = (alpha * heat * (heat >= MIN_SHOWN_HEAT))[..., None]
    out = base * (1.0 - weight) + colormap(heat) * weight
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def montage(tiles: list[np.ndarray], columns: int = 4, pad: int = 2) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 images into one (rows*(H+pad), columns*(W+pad), 3) image."""
    if not tiles:
        raise ExplainError("montage needs at least one image.")
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    out = np.zeros((rows * (h + pad), columns * (w + pad), 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tile[:h, :w]
    return out
