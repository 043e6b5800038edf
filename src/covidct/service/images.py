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


# ---- orientation markers and scale bar burnt into report images ----------------------------------
SCALE_BAR_CHOICES_MM = (200, 100, 50, 20, 10, 5, 2, 1)
SCALE_BAR_MAX_SHARE = 0.3
"""The scale bar is the longest round length that fits this share of the image width."""
MARK_COLOUR = (255, 255, 0)
MARK_OUTLINE = (0, 0, 0)
FONT_SHARE = 0.045
"""Letter height as a share of the image width (at least `MIN_FONT_PX`)."""
MIN_FONT_PX = 10
MARGIN_SHARE = 0.02


def scale_bar_mm(width_px: int, pixel_mm: float) -> int:
    """The longest of `SCALE_BAR_CHOICES_MM` that fits `SCALE_BAR_MAX_SHARE` of the width."""
    room = SCALE_BAR_MAX_SHARE * width_px * pixel_mm
    return next((mm for mm in SCALE_BAR_CHOICES_MM if mm <= room), SCALE_BAR_CHOICES_MM[-1])


def _font(size: int) -> object:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def burn_marks(image: np.ndarray, *, pixel_mm: float, letters: tuple[str, str]) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB uint8 -> RGB copy with the patient-side letters at the middle of the
    left and right edges and a scale bar (``pixel_mm`` = column spacing in mm) with its length in mm at
    the bottom left."""
    from PIL import Image, ImageDraw

    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    size = max(MIN_FONT_PX, int(round(FONT_SHARE * w)))
    font, margin = _font(size), max(2, int(round(MARGIN_SHARE * w)))
    style = {"fill": MARK_COLOUR, "font": font, "stroke_width": 1, "stroke_fill": MARK_OUTLINE}
    draw.text((margin, h // 2), letters[0], anchor="lm", **style)
    draw.text((w - margin, h // 2), letters[1], anchor="rm", **style)
    mm = scale_bar_mm(w, pixel_mm)
    length = int(round(mm / pixel_mm))
    y = h - margin - max(2, size // 5)
    draw.rectangle((margin - 1, y - 2, margin + length, y + 2), fill=MARK_OUTLINE)
    draw.rectangle((margin, y - 1, margin + length - 1, y + 1), fill=MARK_COLOUR)
    draw.text((margin, y - 4), f"{mm} mm", anchor="ld", **style)
    return np.asarray(img)
