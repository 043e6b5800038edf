"""A report a radiologist can use: PACS slice numbers, R/L letters and a scale bar burnt into every key
slice, each key slice clean and with its overlay, and no model wording when no model ran."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from covidct.io.dicom_write import write_dicom_series
from covidct.io.display import edge_letters
from covidct.io.volume import Volume
from covidct.service.images import MARK_COLOUR, burn_marks, scale_bar_mm
from covidct.service.predictor import Predictor
from covidct.service.report import write_study_outputs
from covidct.synthetic import add_lesion, make_phantom

SHAPE = (40, 160, 160)
SPACING = (2.5, 1.6, 1.6)
MODEL_WORDING = ("Predicted class", "not classified", "Class probabilities",
                 "This model scores the whole scan", "Per-slice COVID-19 score")
EDGE_BOX = 0.12
"""Share of the width searched for a side letter at each edge's middle."""


def _phantom_volume() -> Volume:
    normal = make_phantom("Normal", shape=SHAPE, spacing=SPACING, seed=3)
    return add_lesion(normal, side="left", zone="lower", radius_mm=14.0).volume


@pytest.fixture(scope="module")
def bottom_up_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stored bottom-to-top: InstanceNumber 1 is the lowest slice, so PACS image n is covidct slice S - n."""
    volume = _phantom_volume()
    flipped = Volume(np.ascontiguousarray(volume.array[::-1]), volume.spacing,
                     origin=(0.0, 0.0, -float(SHAPE[0] - 1) * SPACING[0]), direction=np.eye(3))
    out = tmp_path_factory.mktemp("report") / "series"
    write_dicom_series(flipped, out)
    return out


@pytest.fixture(scope="module")
def no_model_report(bottom_up_study: Path, tmp_path_factory: pytest.TempPathFactory):
    result = Predictor([]).predict(bottom_up_study)
    paths = write_study_outputs(result, tmp_path_factory.mktemp("out") / "study")
    return result, paths


def _yellow(png: bytes) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return np.all(rgb == MARK_COLOUR, axis=-1)


def _edge_masks(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    band, box = slice(h // 2 - int(EDGE_BOX * h), h // 2 + int(EDGE_BOX * h)), int(EDGE_BOX * w)
    return mask[band, :box], mask[band, w - box:]


def test_no_model_wording_when_no_model_ran(no_model_report) -> None:
    result, paths = no_model_report
    html = paths["html"].read_text()
    for words in MODEL_WORDING:
        assert words not in html, words
    assert "no trained model ran" in html and "Quantitative CT" in html


def test_model_wording_stays_when_a_model_ran(tiny_checkpoint: Path, bottom_up_study: Path,
                                              tmp_path: Path) -> None:
    result = Predictor([tiny_checkpoint], explain=False).predict(bottom_up_study)
    html = write_study_outputs(result, tmp_path / "study")["html"].read_text()
    assert "Predicted class" in html and "Class probabilities" in html and "Per-slice COVID-19 score" in html
    assert "no trained model ran" not in html


def test_slice_numbers_are_the_instance_numbers(no_model_report, bottom_up_study: Path) -> None:
    result, paths = no_model_report
    number_of = {ds.SOPInstanceUID: int(ds.InstanceNumber)
                 for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in bottom_up_study.iterdir())}
    expected = [number_of[uid] for uid in result.volume.meta.sop_uids]
    assert expected == list(range(SHAPE[0], 0, -1))  # stored bottom-to-top
    assert result.slice_numbers["kind"] == "InstanceNumber" and result.slice_numbers["numbers"] == expected
    html = paths["html"].read_text()
    shown = [int(n) for n in re.findall(r"<figcaption>image (\d+) \(InstanceNumber\)", html)]
    assert shown == [expected[k] for k in result.key_slices]
    assert "DICOM InstanceNumber" in html


def test_slice_numbers_of_nifti_input_are_positions(tmp_path: Path) -> None:
    from covidct.io import write_nifti

    result = Predictor([]).predict(write_nifti(_phantom_volume(), tmp_path / "scan.nii.gz"))
    assert result.slice_numbers["kind"] == "position"
    assert result.slice_numbers["numbers"] == list(range(1, SHAPE[0] + 1))
    assert "not a DICOM series" in result.slice_numbers["note"]
    html = write_study_outputs(result, tmp_path / "out")["html"].read_text()
    shown = [int(n) for n in re.findall(r"<figcaption>image (\d+) \(position\)", html)]
    assert shown == [k + 1 for k in result.key_slices]


def test_each_key_slice_is_shown_clean_and_with_its_overlay(no_model_report) -> None:
    result, paths = no_model_report
    html = paths["html"].read_text()
    assert html.count('class="clean"') == html.count('class="overlay"') == len(result.key_slices) > 0
    for k in result.key_slices:
        assert paths[f"clean_{k}"].is_file() and paths[f"slice_{k}"].is_file()
        clean = np.asarray(Image.open(io.BytesIO(result.clean_images[k])).convert("RGB")).astype(int)
        overlay = np.asarray(Image.open(io.BytesIO(result.overlays[k])).convert("RGB")).astype(int)
        lesion = result.lesion_labels[k] > 0
        assert lesion.any()
        assert np.all(clean[lesion][:, 0] == clean[lesion][:, 2])  # grey where the lesion is
        assert np.any(overlay[lesion][:, 0] != overlay[lesion][:, 2])  # coloured in the overlay


def test_side_letters_and_scale_bar_in_the_key_slices(no_model_report) -> None:
    result, _ = no_model_report
    h, w = SHAPE[1:]
    reference_left, reference_right = _edge_masks(_yellow(_png(burn_marks(
        np.zeros((h, w), np.uint8), pixel_mm=SPACING[2], letters=("R", "L")))))
    for k in result.key_slices:
        for png in (result.clean_images[k], result.overlays[k]):
            mask = _yellow(png)
            left, right = _edge_masks(mask)
            assert np.array_equal(left, reference_left) and np.array_equal(right, reference_right)
            mm = scale_bar_mm(w, SPACING[2])
            assert _longest_run(mask[-int(0.1 * h):]) == round(mm / SPACING[2])


def test_a_flipped_scan_gets_swapped_letters() -> None:
    volume = _phantom_volume()
    flipped = Volume(np.ascontiguousarray(volume.array[:, :, ::-1]), volume.spacing,
                     origin=(float(SHAPE[2] - 1) * SPACING[2], 0.0, 0.0),
                     direction=np.diag([-1.0, 1.0, -1.0]))
    assert edge_letters(flipped.direction) == ("L", "R") and edge_letters(volume.direction) == ("R", "L")
    result = Predictor([]).predict(flipped)
    h, w = SHAPE[1:]
    expected = _edge_masks(_yellow(_png(burn_marks(np.zeros((h, w), np.uint8), pixel_mm=SPACING[2],
                                                   letters=("L", "R")))))
    got = _edge_masks(_yellow(result.clean_images[result.key_slices[0]]))
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_burn_marks_scale_bar_follows_the_pixel_size() -> None:
    for pixel_mm, width, mm in ((0.7, 512, 100), (1.6, 160, 50), (0.35, 512, 50)):
        assert scale_bar_mm(width, pixel_mm) == mm
        mask = _yellow(_png(burn_marks(np.zeros((width, width), np.uint8), pixel_mm=pixel_mm,
                                       letters=("R", "L"))))
        assert _longest_run(mask[-int(0.1 * width):]) == round(mm / pixel_mm)


def _png(image: np.ndarray) -> bytes:
    from covidct.service.images import png_bytes

    return png_bytes(image)


def _longest_run(mask: np.ndarray) -> int:
    """Longest horizontal run of True in any row (the scale bar)."""
    best = 0
    for row in mask:
        padded = np.concatenate([[0], row.astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(padded))
        if edges.size:
            best = max(best, int(np.max(edges[1::2] - edges[::2])))
    return best
