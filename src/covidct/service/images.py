"""Slice images for reports and the viewer: windowed grey slices, heat overlays, PNG encoding.

Windows and the colour map are `covidct.preprocessing.window`'s, blending is
`covidct.explain.overlay_rgb`: the viewer, reports and explain outputs draw the same pixels.
"""

from __future__ import annotations

import io

import numpy as np

from covidct.explain.overlay import DEFAULT_ALPHA, overlay_rgb
from covidct.preprocessing.window import GREY_MAX, WINDOWS, colormap, window_to_uint8

HEAT_ALPHA_MAX = 0.85
DEFAULT_OVERLAY_ALPHA = DEFAULT_ALPHA


def window_names() -> tuple[str, ...]:
    return tuple(WINDOWS)


def to_grey(slice_values: np.ndarray, *, window: str = "lung", is_hu: bool = True) -> np.ndarray:
    """A 2D slice as 8-bit grey: HU through a window preset, 8-bit data as is (ConfigError -> 400
    for an unknown preset)."""
    return window_to_uint8(slice_values, is_hu=is_hu, win=window)


def heat_rgba(heat01: np.ndarray) -> np.ndarray:
    """The heatmap as an RGBA layer whose alpha grows with the heat (for the viewer's overlay)."""
    h = np.clip(np.asarray(heat01, dtype=np.float32), 0.0, 1.0)
    rgb = np.rint(colormap(h) * GREY_MAX).astype(np.uint8)
    alpha = (h * HEAT_ALPHA_MAX * GREY_MAX).astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def blend(grey: np.ndarray, heat01: np.ndarray, alpha: float = DEFAULT_OVERLAY_ALPHA) -> np.ndarray:
    """Grey slice (H, W) uint8 with the heatmap (H, W) in [0, 1] blended on top: (H, W, 3) uint8."""
    return overlay_rgb(grey, heat01, alpha)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 grey (H, W), RGB or RGBA (H, W, C) image as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
