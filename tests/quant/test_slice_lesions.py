"""Weight-free 2D lesion score: pseudo-HU anchors, lung masks of whole and cropped slices, lesions.

Synthetic chest phantom in HU (adult size, 1.3 mm pixels): body +40 HU with a fat ring, two lungs at
-850 HU with noise and 4 mm vessels, outside air; a ground-glass patch (-550 HU) can be planted in one
lung. It is lung-windowed (-600/1500) to grey like every HU source of the cohort.
"""

from __future__ import annotations

import numpy as np
import pytest

from covidct.errors import CovidCTError, QuantError
from covidct.preprocessing.lung_intensity import PARENCHYMA_HU, SOFT_TISSUE_HU
from covidct.preprocessing.transforms import LungWindow
from covidct.quant.slice_lesions import analyse_slice, slice_lesions

SIZE = 256
PIXEL_MM = 1.3
LUNG_CENTRES = ((128, 78), (128, 178))  # (y, x): image-left lung, image-right lung
LESION_CENTRE = (140, 60)  # inside the image-left lung
LESION_RADIUS_PX = 14  # 18 mm
CROP_Y, CROP_X = 80, 46  # top-left of a lung crop (Inf-Net-like)


def _disk(centre: tuple[float, float], ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return ((yy - centre[0]) / ry) ** 2 + ((xx - centre[1]) / rx) ** 2 <= 1.0


def phantom_hu(*, lesion_hu: float | None = None, seed: int = 0) -> np.ndarray:
    """(SIZE, SIZE) float32 HU chest slice; ``lesion_hu`` plants a patch in the image-left lung."""
    rng = np.random.default_rng(seed)
    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    hu[_disk((128, 128), 90, 118)] = -100.0  # subcutaneous fat
    hu[_disk((128, 128), 84, 110)] = SOFT_TISSUE_HU
    lungs = _disk(LUNG_CENTRES[0], 62, 38) | _disk(LUNG_CENTRES[1], 62, 38)
    hu[lungs] = PARENCHYMA_HU
    for _ in range(40):  # vessels ~4 mm across
        y, x = rng.integers(70, 190), rng.integers(45, 215)
        vessel = _disk((y, x), 1.5, 1.5) & lungs
        hu[vessel] = SOFT_TISSUE_HU
    if lesion_hu is not None:
        hu[_disk(LESION_CENTRE, LESION_RADIUS_PX, LESION_RADIUS_PX) & lungs] = lesion_hu
    return hu + rng.normal(0.0, 20.0, hu.shape).astype(np.float32)


def lung_grey(
    hu: np.ndarray, center: float = -600.0, width: float = 1500.0, gamma: float = 1.0
) -> np.ndarray:
    """Lung-windowed 8-bit grey of an HU slice (``gamma`` on [0, 1] mimics another export curve)."""
    unit = LungWindow(center, width)(hu) / 255.0
    return np.round(255.0 * unit**gamma).astype(np.uint8)


def test_healthy_lungs_have_no_lesion_and_anchors_map_to_their_hu() -> None:
    maps = analyse_slice(lung_grey(phantom_hu()))
    assert maps.mask_kind == "enclosed"
    assert maps.figures().lesion_fraction < 0.01  # vessels removed by the opening
    inside = maps.lung & (phantom_hu() < -800)
    assert abs(float(np.median(maps.pseudo_hu[inside])) - PARENCHYMA_HU) < 15
    assert 1.1 < maps.pixel_mm < 1.6  # body 236 px wide -> 330 mm / 236 = 1.40 mm


def test_planted_ground_glass_is_found_in_its_lung_and_nowhere_else() -> None:
    maps = analyse_slice(lung_grey(phantom_hu(lesion_hu=-550.0)))
    planted = _disk(LESION_CENTRE, LESION_RADIUS_PX, LESION_RADIUS_PX)
    found = maps.ggo | maps.consolidation
    assert found[planted].mean() > 0.6
    assert not found[:, SIZE // 2 :].any()  # the other (image-right) lung
    assert not (found & ~_disk(LESION_CENTRE, LESION_RADIUS_PX + 3, LESION_RADIUS_PX + 3)).any()
    assert maps.ggo.sum() > 5 * maps.consolidation.sum()
    fig = maps.figures()
    assert 0.04 < fig.lesion_fraction < 0.15 and fig.score == fig.lesion_fraction


def test_consolidation_is_in_the_hull_and_counted_as_consolidation() -> None:
    maps = analyse_slice(lung_grey(phantom_hu(lesion_hu=-50.0)))
    planted = _disk(LESION_CENTRE, LESION_RADIUS_PX - 2, LESION_RADIUS_PX - 2)
    assert maps.hull[planted].all()
    assert maps.consolidation[planted].mean() > 0.6 and not maps.ggo[planted].any()


@pytest.mark.parametrize(
    ("center", "width", "gamma"),
    [(-500.0, 1400.0, 1.0), (-700.0, 1600.0, 1.0), (-600.0, 1500.0, 0.8), (-600.0, 1500.0, 1.25)],
)
def test_another_window_or_gamma_gives_about_the_same_lesion_fraction(
    center: float, width: float, gamma: float
) -> None:
    hu = phantom_hu(lesion_hu=-550.0)
    reference = slice_lesions(lung_grey(hu)).lesion_fraction
    other = slice_lesions(lung_grey(hu, center, width, gamma)).lesion_fraction
    assert reference > 0.04
    assert abs(other - reference) < 0.25 * reference


def test_lung_cropped_image_falls_back_and_still_finds_the_lesion() -> None:
    grey = lung_grey(phantom_hu(lesion_hu=-550.0))[CROP_Y:180, CROP_X:210]  # lungs cut by the borders
    maps = analyse_slice(grey)
    assert maps.mask_kind == "cropped"
    found = maps.ggo | maps.consolidation
    assert found[LESION_CENTRE[0] - CROP_Y, LESION_CENTRE[1] - CROP_X]
    assert not found[:, found.shape[1] // 2 :].any()


def test_large_images_are_analysed_on_the_working_grid() -> None:
    grey = np.kron(lung_grey(phantom_hu(lesion_hu=-550.0)), np.ones((3, 3), np.uint8))  # 768 px
    small = slice_lesions(lung_grey(phantom_hu(lesion_hu=-550.0))).lesion_fraction
    maps = analyse_slice(grey)
    assert maps.scale == pytest.approx(1 / 3) and maps.hull.shape == (SIZE, SIZE)
    assert abs(maps.figures().lesion_fraction - small) < 0.2 * small


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((SIZE, SIZE)),
        np.full((SIZE, SIZE), 200.0),
        np.zeros((4, SIZE, SIZE)),
        np.where(np.eye(SIZE, dtype=bool), np.nan, 0.0),
    ],
    ids=["black", "uniform", "3d", "nan"],
)
def test_unusable_images_raise_a_typed_error(image: np.ndarray) -> None:
    with pytest.raises(QuantError) as err:
        slice_lesions(image)
    assert isinstance(err.value, CovidCTError) and str(err.value)


@pytest.mark.realdata
@pytest.mark.parametrize(("center", "width"), [(-600.0, 1500.0), (-500.0, 1400.0)])
def test_pseudo_hu_of_a_windowed_real_ct_matches_its_true_hu(
    shared_data, center: float, width: float
) -> None:
    """COVID-CT-MD P001 (HU, COVID-19): every 3rd lung slice windowed to grey and standardised back."""
    from covidct.data.cohort_builder import is_lung_slice
    from covidct.io import read_volume
    from covidct.quant.slice_lesions import check_pseudo_hu

    volume = read_volume(shared_data / "covid-ct-md" / "COVID-19" / "P001")
    lung = [z for z in range(0, volume.num_slices, 3) if is_lung_slice(volume.array[z], True)]
    checks = [check_pseudo_hu(volume.array[z], center, width) for z in lung]
    assert len(checks) > 25
    assert np.median([c.median_abs_error_hu for c in checks]) < 40.0
    assert np.nanmedian([c.median_abs_error_lesion_bands_hu for c in checks]) < 60.0
    pseudo = np.array([c.lesion_fraction for c in checks])
    true = np.array([c.lesion_fraction_true_hu for c in checks])
    assert np.mean(np.abs(pseudo - true)) < 0.01
    assert true.max() > 0.03 and np.corrcoef(pseudo, true)[0, 1] > 0.9
