"""CT display windows and the heat colour map: the one place grey values and heat colours are made.

`window` maps HU to [0, 255] as ``clip((hu - (center - width/2)) / width, 0, 1) * 255`` (float).
Display images (explain overlays, reports, the web viewer, DICOM key images) use `window_to_uint8`,
which **rounds to the nearest grey level** (``np.rint``): -600 HU in the lung window is 127.5 and
becomes 128. The COVID-Net CT-2 recipe feeds the float values to the model (no rounding), and
`covidct data` rounds the same way when it writes 8-bit slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covidct.errors import ConfigError, unknown_name_message

GREY_MAX = 255.0


@dataclass(frozen=True)
class Window:
    """A CT display window: ``center`` and ``width`` in HU."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"Window width must be > 0 HU, got {self.width}.")

    @property
    def low(self) -> float:
        """HU shown black."""
        return self.center - self.width / 2.0


LUNG_WINDOW = Window(center=-600.0, width=1500.0)
"""Lung window -600/1500 HU: -1350 HU -> 0, 150 HU -> 255 (COVIDx CT, COVID-Net CT-2)."""
MEDIASTINUM_WINDOW = Window(center=40.0, width=400.0)
BONE_WINDOW = Window(center=400.0, width=1800.0)
WINDOWS: dict[str, Window] = {"lung": LUNG_WINDOW, "mediastinum": MEDIASTINUM_WINDOW, "bone": BONE_WINDOW}

# 'jet'-like colour ramp: (position, R, G, B), interpolated linearly. No matplotlib needed.
_RAMP = np.array(
    [
        [0.00, 0.0, 0.0, 0.5],
        [0.15, 0.0, 0.0, 1.0],
        [0.40, 0.0, 1.0, 1.0],
        [0.60, 1.0, 1.0, 0.0],
        [0.85, 1.0, 0.0, 0.0],
        [1.00, 0.5, 0.0, 0.0],
    ]
)


def get_window(window: str | Window) -> Window:
    """A `Window` by preset name ('lung', 'mediastinum') or as given."""
    if isinstance(window, Window):
        return window
    if window not in WINDOWS:
        raise ConfigError(unknown_name_message("window", window, list(WINDOWS)))
    return WINDOWS[window]


def window(hu: np.ndarray, win: str | Window = LUNG_WINDOW) -> np.ndarray:
    """HU (any shape) -> float32 grey values in [0, 255] through ``win`` (not rounded): the one
    implementation of a CT window (`transforms.LungWindow` and every display call it).

    Computed as ``clip((hu - low) / width, 0, 1) * 255`` in float32, in place on one new array."""
    w = get_window(win)
    out = np.array(hu, dtype=np.float32)  # a copy, also for 0-d input
    out -= np.float32(w.low)
    out /= np.float32(w.width)
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(GREY_MAX)
    return out


def window_to_uint8(values: np.ndarray, *, is_hu: bool = True, win: str | Window = LUNG_WINDOW) -> np.ndarray:
    """Display grey uint8 (any shape): HU through ``win`` rounded to the nearest level; 8-bit input
    (``is_hu`` False) clipped to 0..255 and rounded."""
    values = np.asarray(values, dtype=np.float32)
    grey = window(values, win) if is_hu else np.clip(values, 0.0, GREY_MAX)
    return np.rint(grey).astype(np.uint8)


def colormap(heat01: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] (any shape S; clipped, NaN -> 0) -> float32 RGB in [0, 1], shape (*S, 3)."""
    h = np.clip(np.nan_to_num(np.asarray(heat01, dtype=np.float32)), 0.0, 1.0)
    rgb = [np.interp(h, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)]
    return np.stack(rgb, axis=-1).astype(np.float32)
