"""Hostile text reaches the page only as text, and page script cannot read the credential: real
headless Chromium (Content-Security-Policy enforced) against a real `covidct serve`."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from tests.service.conftest import ServerProcess, make_token
from tests.service.test_browser import CHROMIUM, chromium_page, sign_in, wait_js

SERIES_SHAPE = (24, 96, 96)
"""24 slices: one damaged slice (4 %) is skipped with a warning, not refused (limit 5 %)."""
TITLE = "covidct worklist"
PATIENT_NAME = "<script>alert('patient name')</script>"
"""No '=' (it separates PersonName groups)."""
PATIENT_ID = '"><svg onload="window.__pwned=3">'
SERIES_DESCRIPTION = "<img src=x onerror=\"window.__pwned=2;alert('description')\">"
DAMAGED_NAME = "<img src=x onerror=window.__pwned=4;document.title=666>.dcm"
FAILED_NAME = "<img src=x onerror=window.__pwned=5>.dcm"
ZIP_NAME = "<svg onload=window.__pwned=6>.zip"
INJECTED = "img[src='x'], svg, #worklist script, #viewer script, #v-warnings b"
JOB_TIMEOUT_S = 120.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def _hostile_zip(folder: Path) -> bytes:
    """A DICOM series whose PatientName/PatientID/SeriesDescription carry script, plus a damaged slice
    whose file name is script (the reader's warning names it), zipped."""
    from covidct.io.dicom_write import write_dicom_series
    from covidct.synthetic import make_phantom

    phantom = make_phantom("Normal", shape=SERIES_SHAPE, spacing=(6.0, 1.6, 1.6), seed=7)
    files = write_dicom_series(phantom.volume, folder, patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
                               extra_tags={"SeriesDescription": SERIES_DESCRIPTION})
    data = files[5].read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
        zf.writestr(f"series/{DAMAGED_NAME}", data[: len(data) // 2])  # truncated pixel data
    return buf.getvalue()


def _failing_zip() -> bytes:
    """One 'DICOM' file (preamble + DICM) with nothing readable after it: the job fails, naming it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"bad/{FAILED_NAME}", b"\0" * 128 + b"DICM" + b"\xff" * 64)
    return buf.getvalue()


def _wait_status(srv: ServerProcess, token: str, status: str, count: int) -> list[dict]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        items = httpx.get(f"{srv.url}/worklist", headers={"Authorization": f"Bearer {token}"}).json()["items"]
        if sum(j["status"] == status for j in items) >= count:
            return items
        time.sleep(0.3)
    raise AssertionError(f"no {count} {status} job(s) in {JOB_TIMEOUT_S} s")


def _assert_nothing_ran(page: object, dialogs: list[str]) -> None:
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert page.evaluate("window.__pwned") is None
    assert page.title() == TITLE
    assert page.query_selector_all(INJECTED) == []


def test_hostile_text_is_shown_literally_and_never_runs(server_factory, tmp_path: Path,
                                                       artifacts_dir: Path) -> None:
    srv = server_factory(checkpoint=None)
    token = make_token(srv.db)
    hostile = tmp_path / ZIP_NAME
    hostile.write_bytes(_hostile_zip(tmp_path / "series"))
    failing = tmp_path / "failing.zip"
    failing.write_bytes(_failing_zip())
    with chromium_page(tmp_path / "profile", height=1400) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(srv.url + "/")
        sign_in(page, token)
        for upload in (hostile, failing):  # through the page's own upload form
            page.evaluate("document.getElementById('upload-status').textContent = ''")
            page.set_input_files("#files", str(upload))
            page.click("#upload-btn")
            page.wait_for_selector("#upload-status:has-text('accepted as')")
        _wait_status(srv, token, "done", 1)
        items = _wait_status(srv, token, "failed", 1)
        done = next(j for j in items if j["status"] == "done")
        failed = next(j for j in items if j["status"] == "failed")
        assert FAILED_NAME in failed["error"]

        # worklist: the failed study's message and the hostile description, as text
        page.wait_for_selector(f"#worklist tbody tr[data-id='{failed['id']}'] td.status-failed")
        row = page.locator(f"#worklist tbody tr[data-id='{done['id']}']")
        row.wait_for()
        assert row.locator("td.description").get_attribute("title") == SERIES_DESCRIPTION
        assert row.locator("td.patient").get_attribute("title") == PATIENT_ID
        failed_cell = page.locator(f"#worklist tbody tr[data-id='{failed['id']}'] td.status")
        assert FAILED_NAME in failed_cell.get_attribute("title")
        _assert_nothing_ran(page, dialogs)

        # viewer: PatientName, SeriesDescription and the damaged slice's warning, as text
        row.locator("a.viewer-link").click()
        wait_js(page, "document.getElementById('ct').dataset.slice !== undefined")
        patient = page.inner_text("#v-patient")
        assert PATIENT_NAME in patient and SERIES_DESCRIPTION in patient and PATIENT_ID in patient
        warnings = page.inner_text("#v-warnings")
        assert DAMAGED_NAME in warnings
        page.screenshot(path=str(artifacts_dir / "service-viewer-hostile-text.png"), full_page=True)
        _assert_nothing_ran(page, dialogs)

        # a failed study opened by its URL shows its covidct message as text
        page.goto(f"{srv.url}/#/study/{failed['id']}")
        page.wait_for_selector("#v-error")
        assert FAILED_NAME in page.inner_text("#v-error")
        _assert_nothing_ran(page, dialogs)

        # the HTML report page (escaped by its template, CSP on it too)
        page.goto(f"{srv.url}/studies/{done['id']}/report.html")
        body = page.inner_text("body")
        assert DAMAGED_NAME in body and PATIENT_ID in body and SERIES_DESCRIPTION in body
        assert dialogs == [] and page.evaluate("window.__pwned") is None
        assert page.query_selector_all("img[src='x'], svg[onload]") == []


def test_page_script_cannot_read_the_credential(server_factory, tmp_path: Path) -> None:
    srv = server_factory(checkpoint=None)
    token = make_token(srv.db)
    with chromium_page(tmp_path / "profile", height=900) as page:
        page.goto(srv.url + "/")
        sign_in(page, token)
        assert token not in page.evaluate("document.cookie")
        assert page.evaluate("document.cookie") == ""
        assert page.evaluate("localStorage.length") == 0 and page.evaluate("sessionStorage.length") == 0
        assert page.input_value("#token") == "" and not page.is_visible("#token")
        cookies = {c["name"]: c for c in page.context.cookies()}
        session = cookies["covidct_session"]
        assert session["httpOnly"] is True and session["sameSite"] == "Strict"
        # the cookie authenticates the page's own requests ...
        status = page.evaluate("fetch('/worklist').then(r => r.status)")
        assert status == 200
        # ... and survives a reload (the page asks /session)
        page.reload()
        page.wait_for_selector("#auth-status:has-text('signed in as')")
        page.click("#logout-btn")
        page.wait_for_selector("#auth-status:has-text('not signed in')")
        assert page.is_visible("#token")
        assert "covidct_session" not in {c["name"] for c in page.context.cookies()}
        assert page.evaluate("fetch('/worklist').then(r => r.status)") == 401
    # the Bearer header keeps working for API clients
    resp = httpx.get(f"{srv.url}/worklist", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, json.dumps(resp.json())
