"""The web page in real headless Chromium: token, upload, worklist, viewer, overlay toggle."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.service.conftest import ServerProcess, make_token, zip_bytes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
UI_TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def test_upload_worklist_viewer_overlay(server_factory: Callable[..., ServerProcess], one_study: Path,
                                        tmp_path: Path, artifacts_dir: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    srv = server_factory()
    token = make_token(srv.db)
    upload = tmp_path / "study.zip"
    upload.write_bytes(zip_bytes(one_study))
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_api.sync_playwright() as pw:
        # A persistent context on a new empty folder = Chromium's --user-data-dir (Playwright owns it).
        browser = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1300, "height": 1000})
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(srv.url + "/")
            assert "not a certified medical device" in page.inner_text("#research-use")
            page.fill("#token", token)
            page.click("#save-token")
            page.wait_for_selector("#auth-status:has-text('token accepted')")
            page.set_input_files("#files", str(upload))
            page.click("#upload-btn")
            page.wait_for_selector("#upload-status:has-text('accepted as')")
            row = page.wait_for_selector("#worklist tbody tr:has(td.status-done)")
            row.click()
            page.wait_for_selector("#viewer:not([hidden])")
            page.wait_for_function("document.getElementById('slice-img').naturalWidth > 0")
            assert page.inner_text("#v-covid") != "-"
            overlay_visible = "!document.getElementById('overlay-img').hidden"
            assert not page.is_disabled("#overlay-toggle"), "the study should have a heatmap"
            page.wait_for_function(overlay_visible)
            page.click("#overlay-toggle")
            page.wait_for_function("document.getElementById('overlay-img').hidden")
            page.click("#overlay-toggle")
            page.wait_for_function(overlay_visible)
            page.fill("#opacity", "70")
            page.dispatch_event("#opacity", "input")
            assert page.eval_on_selector("#overlay-img", "e => e.style.opacity") == "0.7"
            page.screenshot(path=str(artifacts_dir / "service-viewer.png"), full_page=True)
            page.fill("#slice", "3")
            page.dispatch_event("#slice", "input")
            page.wait_for_selector("#slice-label:has-text('3 /')")
            page.hover("#stack")
            page.mouse.wheel(0, 120)
            page.wait_for_selector("#slice-label:has-text('4 /')")
            page.select_option("#window", "mediastinum")
            page.wait_for_function("document.getElementById('slice-img').naturalWidth > 0")
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)
