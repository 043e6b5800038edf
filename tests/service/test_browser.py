"""The web page in real headless Chromium: token, upload, worklist, viewer, overlay toggle."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.service.conftest import ServerProcess, make_token, zip_bytes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
UI_TIMEOUT_MS = 120_000
POLL_S = 0.05

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


@contextmanager
def chromium_page(profile: Path, height: int) -> Iterator[object]:
    """A Playwright page in real headless Chromium with a fresh profile folder (its --user-data-dir)."""
    from playwright import sync_api

    profile.mkdir()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1300, "height": height})
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)


def wait_js(page: object, expression: str, timeout_s: float = UI_TIMEOUT_MS / 1000) -> None:
    """Poll a JavaScript expression until it is truthy. (Playwright's ``wait_for_function`` polls with
    ``eval``, which the page's Content-Security-Policy forbids; ``evaluate`` is not subject to it.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s:.0f} s: {expression}")
        time.sleep(POLL_S)


def sign_in(page: object, token: str) -> None:
    """Sign in on the page with the API token (the server answers with the session cookie)."""
    page.fill("#token", token)
    page.click("#login-btn")
    page.wait_for_selector("#auth-status:has-text('signed in as')")


def upload_and_open(page: object, token: str, upload: Path) -> None:
    """Sign in, upload ``upload`` and open the finished study in the viewer from its worklist row."""
    sign_in(page, token)
    page.set_input_files("#files", str(upload))
    page.click("#upload-btn")
    page.wait_for_selector("#upload-status:has-text('accepted as')")
    page.wait_for_selector("#worklist tbody tr:has(td.status-done) a.viewer-link").click()
    page.wait_for_selector("#viewer:not([hidden])")
    wait_js(page, "document.getElementById('ct').dataset.slice !== undefined")


def test_upload_worklist_viewer_overlay(server_factory: Callable[..., ServerProcess], one_study: Path,
                                        tmp_path: Path, artifacts_dir: Path) -> None:
    srv = server_factory()
    token = make_token(srv.db)
    upload = tmp_path / "study.zip"
    upload.write_bytes(zip_bytes(one_study))
    with chromium_page(tmp_path / "chromium-profile", height=1000) as page:
        page.goto(srv.url + "/")
        assert "not a certified medical device" in page.inner_text("#research-use")
        upload_and_open(page, token, upload)
        assert page.inner_text("#v-covid") != "-"
        assert "Not tested on a source it never saw" in page.inner_text("#v-validity")
        overlay_visible = "!document.getElementById('overlay-img').hidden"
        assert not page.is_disabled("#overlay-toggle"), "the study should have a heatmap"
        assert page.is_checked("#overlay-toggle")
        wait_js(page, overlay_visible)
        page.click("#overlay-toggle")
        wait_js(page, "document.getElementById('overlay-img').hidden")
        page.click("#overlay-toggle")
        wait_js(page, overlay_visible)
        page.screenshot(path=str(artifacts_dir / "service-viewer.png"), full_page=True)
        page.fill("#slice", "3")
        page.dispatch_event("#slice", "input")
        page.wait_for_selector("#slice-label:has-text('Im 4 (4 of')")
        page.hover("#viewport")
        page.mouse.wheel(0, 120)
        page.wait_for_selector("#slice-label:has-text('Im 5 (5 of')")
        page.click("#preset-mediastinum")
        assert page.inner_text("#wl-label") == "W 400 L 40"


def test_viewer_without_checkpoint_shows_lesions_and_numbers(server_factory: Callable[..., ServerProcess],
                                                             tmp_path: Path, artifacts_dir: Path) -> None:
    """`covidct serve` with no checkpoint: the viewer shows the quantitative CT and its lesion layer."""
    from covidct.io.dicom_write import write_dicom_series
    from covidct.synthetic import add_lesion, make_phantom

    phantom = add_lesion(make_phantom("Normal", shape=(48, 192, 192), spacing=(2.5, 1.5, 1.5), seed=0),
                         side="left", zone="lower", radius_mm=14.0)
    write_dicom_series(phantom.volume, tmp_path / "series")
    upload = tmp_path / "study.zip"
    upload.write_bytes(zip_bytes(tmp_path / "series"))
    srv = server_factory(checkpoint=None)
    token = make_token(srv.db)
    with chromium_page(tmp_path / "chromium-profile", height=1400) as page:
        page.goto(srv.url + "/")
        upload_and_open(page, token, upload)
        assert "not classified" in page.inner_text("#v-summary")
        assert page.inner_text("#v-validity") == ""
        assert "CT severity score" in page.inner_text("#v-quant-summary")
        assert "left lower" in page.inner_text("#v-quant")
        assert page.is_disabled("#overlay-toggle") and not page.is_checked("#overlay-toggle")
        assert not page.is_disabled("#lesion-toggle")
        wait_js(page, "document.getElementById('lesion-img').naturalWidth > 0")
        assert page.eval_on_selector("#lesion-img", "e => e.hidden") is False
        page.screenshot(path=str(artifacts_dir / "service-viewer-quantitative.png"), full_page=True)
        page.click("#lesion-toggle")
        wait_js(page, "document.getElementById('lesion-img').hidden")
