"""Pure helpers that turn a recipe's output into 8-bit pictures for humans (no file I/O)."""

from __future__ import annotations

import math

import numpy as np

from covidct.errors import ShapeError

MAX_TILES = 16


def display_slices(x: np.ndarray) -> np.ndarray:
    """A recipe output -> (N, H, W) grey slices: (S, C, H, W) takes channel 0, (1, D, H, W) the
    depth axis, (S, 1, H, W) the slices, (C, H, W) channel 0 of one image."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        return x[0] if x.shape[0] == 1 and x.shape[1] > 1 else x[:, 0]
    if x.ndim == 3:
        return x[:1]
    if x.ndim == 2:
        return x[None]
    raise ShapeError(f"Cannot display an array of shape {x.shape}; expected 2D, 3D or 4D.")


def montage(x: np.ndarray, *, max_tiles: int = MAX_TILES) -> np.ndarray:
    """Up to ``max_tiles`` evenly spaced slices of a recipe output tiled into one uint8 image
    (min-max scaled over the shown slices, so ImageNet-normalised inputs display too)."""
    slices = display_slices(x)
    idx = np.unique(np.linspace(0, len(slices) - 1, min(max_tiles, len(slices))).round().astype(int))
    tiles = slices[idx]
    lo, hi = float(tiles.min()), float(tiles.max())
    tiles = (tiles - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(tiles)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles.shape[1:]
    grid = np.zeros((rows * h, cols * w), dtype=np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = np.rint(tile).astype(np.uint8)
    return grid
