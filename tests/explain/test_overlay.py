"""Overlay rendering."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.errors import ExplainError
from covidct.explain.overlay import montage, overlay_rgb, window_to_uint8


def test_overlay_rgb_shape_and_cold_areas_stay_grey():
    grey = np.full((8, 10), 100, np.uint8)
    heat = np.zeros((8, 10), np.float32)
    heat[2:4, 2:4] = 1.0
    rgb = overlay_rgb(grey, heat, 0.5)
    assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (100, 100, 100)
    assert rgb[2, 2, 0] > rgb[2, 2, 2]  # hot = red end of the ramp


def test_overlay_rgb_rejects_mismatched_shapes():
    with pytest.raises(ExplainError, match="same shape"):
        overlay_rgb(np.zeros((8, 8), np.uint8), np.zeros((4, 4)))
    with pytest.raises(ExplainError, match="alpha"):
        overlay_rgb(np.zeros((8, 8), np.uint8), np.zeros((8, 8)), alpha=2.0)


def test_lung_window_and_montage():
    grey = window_to_uint8(np.array([[-1400.0, -600.0, 200.0]]))
    assert grey.tolist() == [[0, 128, 255]]  # -600 HU is 127.5: rounded to the nearest level
    tiles = [np.zeros((4, 5, 3), np.uint8)] * 5
    assert montage(tiles, columns=4, pad=1).shape == (10, 24, 3)
