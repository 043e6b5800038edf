"""covidct's study in the OHIF viewer v3, in real headless Chromium: OHIF (the npm registry's built
@ohif/app) reads the study from Orthanc's DICOMweb, lists covidct's segmentation, renders its lesions
where covidct found them, and shows the SR's measurements."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from tests.conftest import REPO_ROOT
from tests.ohif.conftest import CovidctStudy, DicomWebOrthanc
from tests.ohif.site import Site, start_site

from covidct.io.masks import GGO as GGO_LABEL
from covidct.io.masks import SEGMENTS
from covidct.service.ohif import ohif_app_config, ohif_study_url

CHROMIUM = Path("/usr/bin/chromium")
# WebGL through SwiftShader (software): Cornerstone3D renders with WebGL.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]
VIEWPORT = {"width": 1200, "height": 760}
UI_TIMEOUT_MS = 90_000
DOC_SCREENSHOT = REPO_ROOT / "docs" / "img" / "ohif-seg.png"
DOC_SR_SCREENSHOT = REPO_ROOT / "docs" / "img" / "ohif-sr.png"
UPDATE_DOCS_ENV = "COVIDCT_UPDATE_DOC_IMAGES"
"""Set to 1 to rewrite docs/img/ohif-*.png (else the screenshots go to test-artifacts/ only)."""
GGO_ROW = "ground-glass opacity"
LUNG_ROWS = ("right lung", "left lung")
CHANGED_LEVEL = 24
"""A canvas pixel whose RGB channels differ by more than this (sum) between overlay on and off changed."""
RENDER_WAIT_MS = 1000
TOUR_WAIT_MS = 5000
MIN_IOU = 0.9
"""Overlap of the changed pixels with covidct's ground-glass mask drawn at the viewport's own geometry."""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def ohif_site(ohif_dist: Path, dicomweb_orthanc: DicomWebOrthanc,
              study_in_orthanc: CovidctStudy) -> Iterator[Site]:
    """OHIF and the DICOMweb proxy on one origin; OHIF's data source is that origin's /dicom-web."""
    site = start_site(ohif_dist, ohif_app_config("/dicom-web"), dicomweb_orthanc.http_port)
    try:
        yield site
    finally:
        site.stop()


@contextmanager
def chromium_page(profile: Path) -> Iterator[Any]:
    """A Playwright page in real headless Chromium (fresh profile); page errors are collected."""
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True,
            viewport=VIEWPORT)
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            yield page
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)


def open_study(page: Any, site: Site, study: CovidctStudy) -> None:
    """Open the study's OHIF link (as `covidct serve` gives it), wait for the CT to be displayed and
    skip the onboarding tour a fresh browser profile gets."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(ohif_study_url(site.url, study.study_uid))
    page.wait_for_selector("[data-cy=study-browser-thumbnail]")
    page.wait_for_function("() => window.cornerstone?.getRenderingEngines()?.[0]?.getViewports()?.[0]"
                           "?.getImageIds()?.length > 0")
    skip_tour = page.locator("text=Skip all").first  # OHIF's onboarding tour (a modal overlay)
    try:
        skip_tour.wait_for(state="visible", timeout=TOUR_WAIT_MS)
    except PlaywrightTimeout:
        return
    skip_tour.click()


def open_series(page: Any, description: str) -> None:
    """Double-click a series of the study browser (as a reader opens it)."""
    page.locator("[data-cy=series-description-label]", has_text=description).first.dblclick()


def show_slice(page: Any, index: int) -> None:
    """Scroll the viewport to slice ``index`` (OHIF's image index; the study is superior -> inferior)."""
    page.evaluate("""k => {
        const vp = cornerstone.getRenderingEngines()[0].getViewports()[0];
        return vp.setImageIdIndex(k);
    }""", index)
    page.wait_for_function("k => cornerstone.getRenderingEngines()[0].getViewports()[0]"
                           ".getCurrentImageIdIndex() === k", arg=index)
    page.wait_for_timeout(RENDER_WAIT_MS)


def canvas_rgb(page: Any) -> np.ndarray:
    """The viewport canvas as displayed (screenshot of its element), (H, W, 3) int."""
    from PIL import Image

    png = page.locator("canvas.cornerstone-canvas").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def expected_on_canvas(page: Any, study: CovidctStudy, z: int, mask: np.ndarray,
                       shape: tuple[int, int]) -> np.ndarray:
    """``mask`` (rows, cols) of CT slice ``z`` drawn on the canvas grid: each canvas pixel looks up the
    image pixel under it through the viewport's own canvasToWorld and the CT's DICOM geometry."""
    ds = pydicom.dcmread(study.ct_files[z], stop_before_pixels=True)
    origin = np.asarray(ds.ImagePositionPatient, dtype=float)
    row_dir, col_dir = (np.asarray(ds.ImageOrientationPatient[:3], dtype=float),
                        np.asarray(ds.ImageOrientationPatient[3:], dtype=float))
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    height, width = shape
    world = np.asarray(page.evaluate("""([w, h]) => {
        const vp = cornerstone.getRenderingEngines()[0].getViewports()[0];
        const canvas = vp.getCanvas();
        const sx = canvas.clientWidth / w, sy = canvas.clientHeight / h;
        return [[0, 0], [w, 0], [0, h]].map(([x, y]) => vp.canvasToWorld([x * sx, y * sy]));
    }""", [width, height]), dtype=float)
    # canvasToWorld is affine: world(x, y) = w0 + x (wx - w0) / W + y (wy - w0) / H
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    points = (world[0] + xs[..., None] * (world[1] - world[0]) / width
              + ys[..., None] * (world[2] - world[0]) / height) - origin
    cols = np.floor(points @ row_dir / col_mm + 0.5).astype(int)  # ImagePositionPatient: voxel centre
    rows = np.floor(points @ col_dir / row_mm + 0.5).astype(int)
    inside = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    out = np.zeros(shape, dtype=bool)
    out[inside] = mask[rows[inside], cols[inside]]
    return out


def keep_screenshot(page: Any, artifacts_dir: Path, doc_path: Path) -> None:
    """The page in test-artifacts/, and in docs/img/ when UPDATE_DOCS_ENV is 1 (synthetic data only)."""
    page.screenshot(path=str(artifacts_dir / doc_path.name))
    if os.environ.get(UPDATE_DOCS_ENV) == "1":
        shutil.copyfile(artifacts_dir / doc_path.name, doc_path)


def segment_row(page: Any, label: str) -> Any:
    return page.locator("[data-cy=data-row]", has_text=label).first


def toggle_segment(page: Any, label: str) -> None:
    """Click a segment's eye in the segmentation panel, then move the mouse off the panel (hovering a
    row shows that segment's statistics over the viewport) and let the viewport render."""
    segment_row(page, label).locator("[data-cy=data-row-visibility-toggle]").click()
    page.mouse.move(0, VIEWPORT["height"] - 1)
    page.wait_for_timeout(RENDER_WAIT_MS)


@pytest.mark.slow  # ~55-75 s on the 2-core machine (WebGL in software); tests/ohif/test_dicomweb.py is fast
def test_ohif_lists_and_renders_the_covidct_segmentation(ohif_site: Site, study_in_orthanc: CovidctStudy,
                                                         tmp_path: Path, artifacts_dir: Path) -> None:
    study = study_in_orthanc
    z = int(np.argmax((study.lesion_labels == GGO_LABEL).sum(axis=(1, 2))))
    with chromium_page(tmp_path / "profile") as page:
        open_study(page, ohif_site, study)
        open_series(page, "covidct lungs and lesions")
        page.click("button:has-text('Yes')")  # "Do you want to open this Segmentation?"
        page.wait_for_function("() => services.segmentationService.getSegmentations().length === 1")
        page.click("[data-cy=panelSegmentation-btn]")
        titles = page.locator("[data-cy=data-row-title]")
        titles.first.wait_for()
        assert [t.strip() for t in titles.all_inner_texts()] == [s.label for s in SEGMENTS]
        assert {GGO_ROW, *LUNG_ROWS} <= {s.label for s in SEGMENTS}

        for label in LUNG_ROWS:  # keep only the lesions, so what changes below is the ground glass
            toggle_segment(page, label)
        show_slice(page, z)
        with_overlay = canvas_rgb(page)
        toggle_segment(page, GGO_ROW)
        without_overlay = canvas_rgb(page)
        changed = np.abs(with_overlay - without_overlay).sum(axis=-1) > CHANGED_LEVEL
        expected = expected_on_canvas(page, study, z, study.lesion_labels[z] == GGO_LABEL, changed.shape)
        iou = (changed & expected).sum() / max(1, (changed | expected).sum())
        assert expected.sum() > 0 and iou >= MIN_IOU, (
            f"OHIF drew the ground glass of slice {z} on {changed.sum()} canvas pixels, covidct's mask "
            f"covers {expected.sum()} there; overlap (IoU) {iou:.2f} < {MIN_IOU}")

        for label in (GGO_ROW, *LUNG_ROWS):
            toggle_segment(page, label)
        keep_screenshot(page, artifacts_dir, DOC_SCREENSHOT)
        assert not page.errors, page.errors


def test_ohif_shows_the_sr_measurements(ohif_site: Site, study_in_orthanc: CovidctStudy,
                                        tmp_path: Path, artifacts_dir: Path) -> None:
    quant = study_in_orthanc.result["quantitative"]
    with chromium_page(tmp_path / "profile") as page:
        open_study(page, ohif_site, study_in_orthanc)
        open_series(page, "covidct AI result")
        report = page.locator("[data-cy=viewport-pane]", has_text="CT Report").first
        report.wait_for()
        text = report.inner_text()
        involvement = f"total lung involvement: {round(100 * quant['involvement']['total'], 4):g} %"
        assert involvement in text
        assert f"CT severity score total: {quant['severity_total']:g} {{score}}" in text
        assert "not a certified medical device" in text
        keep_screenshot(page, artifacts_dir, DOC_SR_SCREENSHOT)
        assert not page.errors, page.errors
