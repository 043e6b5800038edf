"""The rolling-ball recovery of dense lesions on the lung surface (`recover_surface_lesions`), on a
hand-built chest phantom whose every structure and HU is known: a consolidation filling a bay of the
lung's outer (costal) surface is put back into the lung, while the heart and mediastinum between the
lungs, fat and bone in bays of the chest wall and a liver dome under the lung base stay out."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import plane_ellipse

from covidct.io.volume import Volume
from covidct.quant.lungs import (
    BACKGROUND,
    LEFT_LUNG,
    RIGHT_LUNG,
    between_lungs,
    inferior_lung_end,
    segment_lungs,
)

SHAPE = (16, 128, 128)
SPACING = (2.5, 1.5, 1.5)
TOP_TO_BOTTOM = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
"""Direction of a stack whose z + 1 is the inferior slice (x patient left, y posterior)."""
RADIUS_MM = 20.0
LUNG_HU, TISSUE_HU, FAT_HU, BONE_HU, LESION_HU = -850.0, 40.0, -100.0, 500.0, 30.0
LESION_SLICES = slice(5, 10)
DOME_SLICES = slice(12, 16)
MIN_RECOVERED = 0.6
"""Share of the consolidation's pixels in the lung's bay that must come back (measured 0.72: the 20 mm
ball spans the bay's mouth and sags into it, so the crescent between its arc and the chest wall stays
out)."""
MAX_RECOVERED_WITHOUT = 0.5
"""... of which the lung mask without the recovery holds at most this share (the test needs the step)."""


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """bool (y, x) ellipse in mm from the image centre, on this phantom's grid (`plane_ellipse`)."""
    return plane_ellipse(SHAPE[1:], SPACING[1:], cy, cx, ry, rx)


def _phantom(*, lesion: bool = False, fat_bay: bool = False, bone_bay: bool = False
             ) -> tuple[np.ndarray, dict]:
    """(z, y, x) HU and the masks of its parts. Image left is the patient's right lung. The heart sits
    between the lungs and indents both; a hilar vessel against the mediastinum fills a notch of the left
    lung; a liver dome rises into the right lung's posterolateral base."""
    body = _ellipse(0, 0, 75, 92)
    right = _ellipse(0, -42, 52, 34)  # image left
    left = _ellipse(0, 42, 52, 34)
    heart = _ellipse(-22, 4, 32, 34)
    spine = _ellipse(52, 0, 14, 14)
    hilum = _ellipse(22, 24, 12, 12)  # hilar vessels the left lung wraps around, against the mediastinum
    hilum_slices = range(3, 11)  # with lung above and below it, as a real hilum
    bay = _ellipse(30, -58, 15, 15)  # a bay 15-20 mm deep in the right lung's posterolateral costal surface
    lung_plane = (right | left) & ~heart & ~spine
    hu = np.full(SHAPE, -1000.0, np.float32)
    parts = {"lesion": np.zeros(SHAPE, bool), "heart": np.zeros(SHAPE, bool), "fat": np.zeros(SHAPE, bool),
             "bone": np.zeros(SHAPE, bool), "dome": np.zeros(SHAPE, bool), "hilum": np.zeros(SHAPE, bool)}
    for z in range(SHAPE[0]):
        plane = np.where(body, TISSUE_HU, -1000.0)
        plane[lung_plane] = LUNG_HU
        plane[spine] = BONE_HU
        if z in hilum_slices:
            plane[hilum] = TISSUE_HU
            parts["hilum"][z] = hilum
        if lesion and LESION_SLICES.start <= z < LESION_SLICES.stop:
            plane[bay & lung_plane] = LESION_HU
            parts["lesion"][z] = bay & lung_plane
        if fat_bay and LESION_SLICES.start <= z < LESION_SLICES.stop:
            plane[bay & lung_plane] = FAT_HU
            parts["fat"][z] = bay & lung_plane
        if bone_bay and LESION_SLICES.start <= z < LESION_SLICES.stop:
            plane[bay & lung_plane] = BONE_HU
            parts["bone"][z] = bay & lung_plane
        if DOME_SLICES.start <= z < DOME_SLICES.stop:  # grows towards the base, open to the chest wall
            dome = _ellipse(20, -60, 8 + 6 * (z - DOME_SLICES.start), 8 + 6 * (z - DOME_SLICES.start))
            plane[dome & lung_plane] = TISSUE_HU
            parts["dome"][z] = dome & lung_plane
        hu[z] = plane
        parts["heart"][z] = heart & body
    return hu, parts


def _segment(hu: np.ndarray, radius_mm: float, *, flip: bool = False) -> np.ndarray:
    """Lung labels of the phantom (as a top-to-bottom stack, or stored bottom-to-top with ``flip``)."""
    if not flip:
        return segment_lungs(Volume(hu, SPACING, direction=TOP_TO_BOTTOM), recover_radius_mm=radius_mm)
    bottom_up = np.diag([1.0, 1.0, 1.0]).ravel()
    return segment_lungs(Volume(hu[::-1].copy(), SPACING, direction=bottom_up),
                         recover_radius_mm=radius_mm)[::-1]


def test_costal_consolidation_is_recovered_into_its_own_lung():
    hu, parts = _phantom(lesion=True)
    lesion = parts["lesion"]
    without = _segment(hu, 0.0)
    with_step = _segment(hu, RADIUS_MM)
    assert np.count_nonzero(without[lesion]) <= MAX_RECOVERED_WITHOUT * lesion.sum()
    assert np.count_nonzero(with_step[lesion] == RIGHT_LUNG) >= MIN_RECOVERED * lesion.sum()
    assert not np.any(with_step[lesion] == LEFT_LUNG)
    added = (with_step > 0) & (without == BACKGROUND)
    assert np.count_nonzero(added & ~lesion) <= 0.1 * lesion.sum()  # not the chest wall behind it


def test_stored_bottom_to_top_gives_the_same_recovery():
    hu, _ = _phantom(lesion=True)
    np.testing.assert_array_equal(_segment(hu, RADIUS_MM, flip=True), _segment(hu, RADIUS_MM))


@pytest.mark.parametrize("part", ["fat", "bone"])
def test_fat_and_bone_in_a_bay_stay_out(part):
    hu, parts = _phantom(**{f"{part}_bay": True})
    added = (_segment(hu, RADIUS_MM) > 0) & (_segment(hu, 0.0) == BACKGROUND)
    assert parts[part].sum() > 0
    assert not np.any(added)


def test_normal_phantom_heart_hilum_and_dome_stay_out():
    """The lung mask's own 10 mm closing takes a few corner pixels of the heart; the recovery adds none."""
    hu, parts = _phantom()
    added = (_segment(hu, RADIUS_MM) > 0) & (_segment(hu, 0.0) == BACKGROUND)
    assert not np.any(added & parts["heart"])
    assert not np.any(added & parts["hilum"])
    assert not np.any(added & parts["dome"])
    assert not np.any(added)


def test_between_lungs_is_the_row_span_between_the_medial_edges():
    labels = np.zeros((1, 3, 12), np.uint8)
    labels[0, :2, 1:4] = RIGHT_LUNG
    labels[0, :2, 8:11] = LEFT_LUNG
    labels[0, 2, 1:4] = RIGHT_LUNG  # a row with one lung only: no mediastinum on it
    expected = np.zeros((1, 3, 12), bool)
    expected[0, :2, 4:8] = True
    np.testing.assert_array_equal(between_lungs(labels), expected)


def test_inferior_lung_end_follows_the_slice_direction():
    lung = np.zeros((4, 1, 2), bool)
    lung[1, 0, 0] = lung[2, 0, 0] = True
    np.testing.assert_array_equal(inferior_lung_end(lung, inferior_step=1)[0], [2, -1])
    np.testing.assert_array_equal(inferior_lung_end(lung, inferior_step=-1)[0], [1, 4])
