"""Slice images for reports and the viewer: window presets, heatmap colouring, PNG encoding."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

GREY_MAX = 255
HEAT_ALPHA_MAX = 0.85
DEFAULT_OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class Window:
    """A CT display window (centre and width in HU)."""

    center: float
    width: float


WINDOWS: dict[str, Window] = {
    "lung": Window(center=-600.0, width=1500.0),
    "mediastinum": Window(center=40.0, width=400.0),
}


def window_names() -> tuple[str, ...]:
    return tuple(WINDOWS)


def to_grey(slice_values: np.ndarray, *, window: str = "lung", is_hu: bool = True) -> np.ndarray:
    """A 2D slice as 8-bit grey: HU through a window preset, 8-bit data as is."""
    from covidct.errors import ServiceError, unknown_name_message

    if window not in WINDOWS:
        raise ServiceError(unknown_name_message("window", window, list(WINDOWS)))
    values = np.asarray(slice_values, dtype=np.float32)
    if not is_hu:
        return np.clip(values, 0, GREY_MAX).astype(np.uint8)
    win = WINDOWS[window]
    low = win.center - win.width / 2.0
    return (np.clip((values - low) / win.width, 0.0, 1.0) * GREY_MAX).astype(np.uint8)


def heat_colors(heat01: np.ndarray) -> np.ndarray:
    """A 'jet'-like colour map: (H, W) in [0, 1] -> (H, W, 3) uint8."""
    h = np.clip(np.asarray(heat01, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * h - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * h - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * h - 1.0), 0.0, 1.0)
    return (np.stack([r, g, b], axis=-1) * GREY_MAX).astype(np.uint8)


def heat_rgba(heat01: np.ndarray) -> np.ndarray:
    """The heatmap as an RGBA layer whose alpha grows with the heat (for the viewer's overlay)."""
    h = np.clip(np.asarray(heat01, dtype=np.float32), 0.0, 1.0)
    alpha = (h * HEAT_ALPHA_MAX * GREY_MAX).astype(np.uint8)
    return np.concatenate([heat_colors(h), alpha[..., None]], axis=-1)


def blend(grey: np.ndarray, heat01: np.ndarray, alpha: float = DEFAULT_OVERLAY_ALPHA) -> np.ndarray:
    """Grey slice with the heatmap blended on top: (H, W, 3) uint8.

    Uses ``covidct.explain.overlay_rgb`` when present so reports match the explain module.
    """
    try:
        from covidct.explain import overlay_rgb  # type: ignore[attr-defined]

        return np.asarray(overlay_rgb(grey, heat01, alpha), dtype=np.uint8)
    except (ImportError, AttributeError):
        pass
    base = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    weight = alpha * np.clip(np.asarray(heat01, dtype=np.float32), 0.0, 1.0)[..., None]
    return (base * (1.0 - weight) + heat_colors(heat01).astype(np.float32) * weight).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 grey (H, W), RGB or RGBA (H, W, C) image as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def resize_heat(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear-resize a 2D heatmap to ``shape`` (H, W)."""
    if heat.shape == shape:
        return heat.astype(np.float32)
    from PIL import Image

    img = Image.fromarray(heat.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)
