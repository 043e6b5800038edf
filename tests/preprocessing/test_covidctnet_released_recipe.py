"""The `covidctnet-released` recipe against the CovidCTNet authors' own preprocessing code.

Their functions (``dcm_utilities.py``: load_ct_scan, get_pixels_hu; ``utilities.py``: resample_ct_pixels,
truncate_hu, normalize; then ``resize(CT, (D, 128, 128), anti_aliasing=True)`` and ``resize(., (50, 128,
128))`` as in Testing-CovidCTNet.ipynb) are imported from ../shared/data/published-weights/covidctnet,
never copied here. Two shims let their 2020 code run on today's libraries: ``pydicom.read_file`` (renamed
``dcmread`` in pydicom 3) and empty stand-ins for pandas / matplotlib / scipy.misc, which utilities.py
imports at the top but the functions used here never touch.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from covidct.io import Volume, read_volume
from covidct.preprocessing import get_recipe

PARITY_ATOL = 1e-4
UNUSED_IMPORTS = ("pandas", "matplotlib", "matplotlib.pyplot", "scipy.misc")


@pytest.fixture
def authors(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    folder = shared_data / "published-weights" / "covidctnet"
    if not (folder / "utilities.py").is_file():
        pytest.skip(f"{folder} is absent")
    import pydicom

    for name in UNUSED_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(pydicom, "read_file", pydicom.dcmread, raising=False)
    monkeypatch.syspath_prepend(str(folder))
    for module in ("utilities", "dcm_utilities"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return types.SimpleNamespace(
        ut=importlib.import_module("utilities"), du=importlib.import_module("dcm_utilities")
    )


def _authors_pipeline(authors: types.SimpleNamespace, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(denoiser input (D, 128, 128), classifier input (50, 128, 128)) by the authors' code."""
    from skimage.transform import resize

    slices, spacing = authors.du.load_ct_scan(str(folder))
    hu = authors.du.get_pixels_hu(slices)
    ct = authors.ut.normalize(authors.ut.truncate_hu(authors.ut.resample_ct_pixels(hu, spacing)))
    ct_resized = resize(ct, (ct.shape[0], 128, 128), anti_aliasing=True)
    return ct_resized, resize(ct_resized, (50, 128, 128))


def _check_parity(authors: types.SimpleNamespace, folder: Path) -> None:
    ref_slices, ref_volume = _authors_pipeline(authors, folder)
    recipe = get_recipe("covidctnet-released")
    volume = read_volume(folder)
    slices = recipe.prepare_slices(volume).array
    assert slices.shape == (ref_slices.shape[0], 1, 128, 128)
    assert np.abs(slices[:, 0] - ref_slices).max() <= PARITY_ATOL
    classifier_input = recipe.to_classifier_input(slices)
    assert classifier_input.shape == (1, 50, 128, 128)
    assert np.abs(classifier_input[0] - ref_volume).max() <= PARITY_ATOL
    assert np.abs(recipe.prepare_volume(volume).array[0] - ref_volume).max() <= PARITY_ATOL


@pytest.mark.realdata
def test_parity_with_authors_code_lidc(authors, shared_data: Path) -> None:
    # LIDC-IDRI-0002 (12 slices of 1.25 mm): stored out-of-field pixels are -2000, which both pipelines
    # turn into air, so the HU volumes agree exactly (see docs/results.md for LIDC-0001/0003).
    _check_parity(authors, next((shared_data / "lidc-idri-small" / "LIDC-IDRI-0002").glob("*/*")))


@pytest.mark.realdata
@pytest.mark.slow  # 148 slices of 512x512: ~2 min for both pipelines on a loaded 2-core machine
def test_parity_with_authors_code_covid_ct_md(authors, shared_data: Path) -> None:
    _check_parity(authors, shared_data / "covid-ct-md" / "COVID-19" / "P001")


def _volume(hu: np.ndarray, spacing=(2.0, 1.0, 1.0)) -> Volume:
    return Volume(array=hu.astype(np.float32), spacing=spacing, is_hu=True)


def test_slice_order_is_inferior_to_superior_and_bone_becomes_air() -> None:
    hu = np.full((4, 32, 32), -1000.0)
    hu[0] = 0.0  # the most superior slice of a covidct Volume
    hu[3, 8:24, 8:24] = 1200.0  # bone in the most inferior slice: above 400 HU -> -1000 HU, not 400
    slices = get_recipe("covidctnet-released", size=16).prepare_slices(_volume(hu)).array
    assert slices.shape == (8, 1, 16, 16)  # 4 slices x 2 mm -> 8 slices at 1 mm
    assert slices[-1].mean() == pytest.approx(1000 / 1400, abs=0.02)  # superior slice last
    assert slices[0].max() < 0.05  # the bone slice comes first, and it is air now


def test_maps_go_back_with_the_slice_order_restored() -> None:
    recipe = get_recipe("covidctnet-released", size=16, depth=8)
    volume = _volume(np.full((4, 32, 32), -1000.0))
    prepared = recipe.prepare_volume(volume)
    heat = np.zeros((8, 16, 16), np.float32)
    heat[0] = 1.0  # the first model slice is the most inferior one
    back = recipe.to_volume(heat, prepared.geometry)
    assert back.shape == (4, 32, 32)
    assert back[-1].mean() > 0.4 and back[0].max() == 0.0  # a covidct Volume ends inferior
