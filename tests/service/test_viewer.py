"""The viewer as a radiologist drives it, in real headless Chromium against a real `covidct serve`
(no checkpoint: quantitative CT only): URL per study, scrolling, window/level, HU readout, zoom/pan,
orientation, overlays, zone table, worklist columns and sorting."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.service.conftest import ServerProcess, make_token, zip_bytes
from tests.service.test_browser import CHROMIUM, chromium_page, sign_in, wait_js

from covidct.service.quantitative import LESION_COLORS

JOB_TIMEOUT_S = 120.0
SERIES_SHAPE = (40, 128, 128)
SERIES_SPACING = (5.0, 2.5, 2.5)
FIRST_INSTANCE = 101
"""InstanceNumbers written are 101, 102, ...: a PACS shows those, not 1-based positions."""
WL_HU_PER_PX = 4  # viewer.js: window/level drag sensitivity
LAYER_COLOURS_JS = """(id) => {
    const img = document.getElementById(id), c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0) seen.add([d[i], d[i + 1], d[i + 2]].join());
    return [...seen].map((s) => s.split(',').map(Number)); }"""
"""The distinct colours of the visible pixels of an overlay image."""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


@dataclass
class Study:
    job_id: str
    hu: np.ndarray
    """The volume as the server keeps it (int16 HU, z superior -> inferior)."""
    result: dict


@dataclass
class ViewerServer:
    server: ServerProcess
    token: str
    lesion: Study
    normal: Study


def _write_series(folder: Path, *, lesion: bool, seed: int) -> np.ndarray:
    """A phantom DICOM series with InstanceNumbers from `FIRST_INSTANCE`; returns its HU volume as
    the reader sees it (rounded to int16 like the server keeps it)."""
    import pydicom

    from covidct.io import read_volume
    from covidct.io.dicom_write import write_dicom_series
    from covidct.synthetic import add_lesion, make_phantom

    phantom = make_phantom("Normal", shape=SERIES_SHAPE, spacing=SERIES_SPACING, seed=seed)
    if lesion:
        phantom = add_lesion(phantom, side="left", zone="lower", radius_mm=18.0)
    files = write_dicom_series(phantom.volume, folder, seed=seed, patient_id=f"PID-{seed}",
                               extra_tags={"SeriesDescription": f"CHEST {seed}"})
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = FIRST_INSTANCE + k
        ds.save_as(f)
    return np.rint(read_volume(folder).array).astype(np.int16)


def _upload(srv: ServerProcess, token: str, folder: Path) -> str:
    resp = httpx.post(f"{srv.url}/studies", headers={"Authorization": f"Bearer {token}"},
                      files=[("files", ("study.zip", zip_bytes(folder), "application/zip"))], timeout=60)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def _wait_done(srv: ServerProcess, token: str, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = httpx.get(f"{srv.url}/studies/{job_id}", headers={"Authorization": f"Bearer {token}"}).json()
        if job["status"] in ("done", "failed"):
            assert job["status"] == "done", job
            return job["result"]
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not done in {JOB_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerServer]:
    """One server (no checkpoint) with two finished studies: one with a left lower-zone lesion."""
    root = tmp_path_factory.mktemp("viewer")
    srv = ServerProcess(checkpoint=None, db=root / "service.db", data_dir=root / "data").start()
    try:
        token = make_token(srv.db)
        studies = {}
        for name, lesion, seed in (("lesion", True, 3), ("normal", False, 4)):
            hu = _write_series(root / name, lesion=lesion, seed=seed)
            job_id = _upload(srv, token, root / name)
            studies[name] = Study(job_id, hu, _wait_done(srv, token, job_id))
        yield ViewerServer(srv, token, studies["lesion"], studies["normal"])
    finally:
        srv.stop()


def _open(page: object, vs: ViewerServer, study: Study, position: int | None = None) -> None:
    """Open ``study`` by its URL (#/study/<id>[/<1-based position>]) and wait for the slice to draw."""
    suffix = "" if position is None else f"/{position}"
    page.goto(f"{vs.server.url}/#/study/{study.job_id}{suffix}")
    page.wait_for_selector("#viewer:not([hidden])")
    wait_js(page, "document.getElementById('ct').dataset.slice !== undefined")


def _label(position: int, total: int) -> str:
    return f"Im {FIRST_INSTANCE + position - 1} ({position} of {total})"


def _wait_label(page: object, position: int, total: int) -> None:
    want = json.dumps(_label(position, total))
    wait_js(page, f"document.getElementById('slice-label').textContent === {want}")


def _drawn_slice(page: object) -> int:
    return int(page.eval_on_selector("#ct", "c => c.dataset.slice"))


def _client_point(page: object, x: int, y: int, cols: int, rows: int) -> tuple[float, float]:
    """Screen coordinates of the centre of voxel (x, y) as the canvas is drawn now (after zoom/pan)."""
    box = page.eval_on_selector("#ct", "c => { const r = c.getBoundingClientRect(); "
                                       "return [r.left, r.top, r.width, r.height]; }")
    left, top, width, height = box
    return left + (x + 0.5) * width / cols, top + (y + 0.5) * height / rows


def _hu_readout(page: object, x: int, y: int, cols: int, rows: int) -> tuple[int, int, int]:
    page.mouse.move(*_client_point(page, x, y, cols, rows))
    text = page.inner_text("#hu-readout")
    m = re.fullmatch(r"HU (-?\d+) \(x (\d+), y (\d+)\)", text)
    assert m, text
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_study_url_reload_and_scrolling(viewer_server: ViewerServer, tmp_path: Path) -> None:
    vs, study = viewer_server, viewer_server.lesion
    n = study.result["num_slices"]
    with chromium_page(tmp_path / "profile", height=1300) as page:
        page.goto(vs.server.url + "/")
        sign_in(page, vs.token)
        _open(page, vs, study, position=10)
        _wait_label(page, 10, n)
        assert page.inner_text("#slice-numbering") == "slice numbers: InstanceNumber"
        page.reload()  # the address alone brings the same study and slice back
        wait_js(page, "document.getElementById('ct').dataset.slice === '9'")
        _wait_label(page, 10, n)
        page.focus("#viewport")
        page.keyboard.press("ArrowDown")
        _wait_label(page, 11, n)
        page.keyboard.press("PageDown")  # a tenth of the series
        _wait_label(page, 11 + round(n / 10), n)
        page.keyboard.press("ArrowUp")
        _wait_label(page, 10 + round(n / 10), n)
        page.keyboard.press("PageUp")
        _wait_label(page, 10, n)
        page.hover("#viewport")
        page.mouse.wheel(0, 120)
        _wait_label(page, 11, n)
        page.mouse.wheel(0, -120)
        page.mouse.wheel(0, -120)
        _wait_label(page, 9, n)
        wait_js(page, "document.getElementById('ct').dataset.slice === '8'")
        assert page.evaluate("location.hash") == f"#/study/{study.job_id}/9"
        page.keyboard.press("Home")
        _wait_label(page, 1, n)
        page.keyboard.press("End")
        _wait_label(page, n, n)


def test_window_level_drag_presets_and_pixels(viewer_server: ViewerServer, tmp_path: Path) -> None:
    vs, study = viewer_server, viewer_server.lesion
    k = 20
    rows, cols = study.hu.shape[1:]
    with chromium_page(tmp_path / "profile", height=1300) as page:
        page.goto(vs.server.url + "/")
        sign_in(page, vs.token)
        _open(page, vs, study, position=k + 1)
        wait_js(page, f"document.getElementById('ct').dataset.slice === '{k}'")
        assert page.inner_text("#wl-label") == "W 1500 L -600"
        presets = (("mediastinum", "W 400 L 40"), ("bone", "W 1800 L 400"), ("lung", "W 1500 L -600"))
        for name, label in presets:
            page.click(f"#preset-{name}")
            assert page.inner_text("#wl-label") == label
        cx, cy = _client_point(page, cols // 2, rows // 2, cols, rows)
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 50, cy - 25, steps=5)
        page.mouse.up()
        width, center = 1500 + 50 * WL_HU_PER_PX, -600 - 25 * WL_HU_PER_PX
        assert page.inner_text("#wl-label") == f"W {width} L {center}"
        # the canvas shows the volume through that window: grey = clip((hu - low) / width) * 255
        for x, y in ((cols // 2, rows // 2), (10, 10), (cols // 3, rows // 2)):
            grey = page.evaluate("([x, y]) => document.getElementById('ct').getContext('2d')"
                                 ".getImageData(x, y, 1, 1).data[0]", [x, y])
            hu = float(study.hu[k, y, x])
            want = int(np.clip(np.rint((hu - (center - width / 2)) * 255.0 / width), 0, 255))
            assert abs(grey - want) <= 1, (x, y, hu, grey, want)


def test_hu_readout_zoom_and_pan(viewer_server: ViewerServer, tmp_path: Path) -> None:
    vs, study = viewer_server, viewer_server.lesion
    k = 22
    rows, cols = study.hu.shape[1:]
    voxels = ((cols // 2, rows // 2), (cols // 4, rows // 2 + 7), (3 * cols // 4 - 5, rows // 3), (0, 0))
    with chromium_page(tmp_path / "profile", height=1300) as page:
        page.goto(vs.server.url + "/")
        sign_in(page, vs.token)
        _open(page, vs, study, position=k + 1)
        wait_js(page, f"document.getElementById('ct').dataset.slice === '{k}'")
        for x, y in voxels:
            assert _hu_readout(page, x, y, cols, rows) == (int(study.hu[k, y, x]), x, y)
        before = page.eval_on_selector("#ct", "c => c.getBoundingClientRect().width")
        page.focus("#viewport")
        page.keyboard.press("+")
        page.click("#zoom-in")
        assert "scale(1.5625)" in page.eval_on_selector("#canvas-wrap", "e => e.style.transform")
        after = page.eval_on_selector("#ct", "c => c.getBoundingClientRect().width")
        assert after == pytest.approx(before * 1.5625, rel=0.01)
        assert page.inner_text("#zoom-label") == "156 %"
        cx, cy = _client_point(page, cols // 2, rows // 2, cols, rows)
        page.keyboard.down("Shift")
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx - 40, cy + 30, steps=4)
        page.mouse.up()
        page.keyboard.up("Shift")
        assert "translate(-40px, 30px)" in page.eval_on_selector("#canvas-wrap", "e => e.style.transform")
        assert page.inner_text("#wl-label") == "W 1500 L -600", "a pan must not change the window"
        for x, y in voxels[:3]:  # the readout follows the zoomed and panned image
            assert _hu_readout(page, x, y, cols, rows) == (int(study.hu[k, y, x]), x, y)
        page.click("#zoom-reset")
        transform = page.eval_on_selector("#canvas-wrap", "e => e.style.transform")
        assert transform == "translate(0px, 0px) scale(1)"


def test_orientation_overlays_and_zone_table(viewer_server: ViewerServer, tmp_path: Path,
                                            artifacts_dir: Path) -> None:
    vs, study = viewer_server, viewer_server.lesion
    quant = study.result["quantitative"]
    assert quant["available"]
    key = study.result["key_slices"][0]
    with chromium_page(tmp_path / "profile", height=1400) as page:
        page.goto(vs.server.url + "/")
        sign_in(page, vs.token)
        _open(page, vs, study)
        wait_js(page, f"document.getElementById('ct').dataset.slice === '{key}'")
        assert (page.inner_text("#marker-left"), page.inner_text("#marker-right")) == ("R", "L")
        assert page.is_disabled("#overlay-toggle") and not page.is_checked("#overlay-toggle")
        assert page.is_checked("#lesion-toggle")
        wait_js(page, "document.getElementById('lesion-img').naturalWidth > 0")
        page.fill("#opacity", "30")
        page.dispatch_event("#opacity", "input")
        assert page.eval_on_selector("#lesion-img", "e => e.style.opacity") == "0.3"
        colours = page.evaluate(LAYER_COLOURS_JS, "lesion-img")
        assert colours, "the key slice of a lesion study shows lesion pixels"
        for colour in colours:  # ground glass yellow or consolidation red (canvas alpha rounding: +-2)
            assert any(max(abs(a - b) for a, b in zip(colour, ref, strict=True)) <= 2
                       for ref in LESION_COLORS.values()), colour
        page.screenshot(path=str(artifacts_dir / "service-viewer-pacs.png"), full_page=True)
        page.click("#lesion-toggle")
        wait_js(page, "document.getElementById('lesion-img').hidden")
        assert page.inner_text("#v-severity") == f"{quant['severity_total']} / {quant['severity_max']}"
        zones = page.eval_on_selector_all("#v-zones tr td:first-child", "tds => tds.map(t => t.textContent)")
        assert zones == list(quant["zones"])
        assert page.inner_text("#v-pattern") == quant["pattern"]["category"]
        assert "PID-3" in page.inner_text("#v-patient")


def test_worklist_columns_links_and_sorting(viewer_server: ViewerServer, tmp_path: Path) -> None:
    vs = viewer_server
    lesion, normal = vs.lesion, vs.normal
    assert lesion.result["abnormal_fraction"] > normal.result["abnormal_fraction"]
    with chromium_page(tmp_path / "profile", height=1300) as page:
        page.goto(vs.server.url + "/")
        sign_in(page, vs.token)
        page.select_option("#sort", "abnormal_fraction")
        wait_js(page, "document.getElementById('worklist').dataset.sort === 'abnormal_fraction'")
        page.wait_for_selector("#worklist tbody tr:nth-child(2)")
        order = page.eval_on_selector_all("#worklist tbody tr", "trs => trs.map(t => t.dataset.id)")
        assert order == [lesion.job_id, normal.job_id]
        row = page.locator(f"#worklist tbody tr[data-id='{lesion.job_id}']")
        assert row.locator("td.patient").inner_text() == "PID-3"
        assert row.locator("td.description").inner_text() == "CHEST 3"
        involvement = f"{100 * lesion.result['abnormal_fraction']:.1f} %"
        assert row.locator("td.involvement").inner_text() == involvement
        severity = lesion.result["quantitative"]["severity_total"]
        assert row.locator("td.severity").inner_text().startswith(str(severity))
        assert row.locator("td.class").inner_text() == "no model"
        assert row.locator("td.date").inner_text() == lesion.result["display"]["study_date"]
        assert row.locator("a.report-link").get_attribute("href") == f"/studies/{lesion.job_id}/report.html"
        page.click("#worklist th[data-sort='severity']")
        wait_js(page, "document.getElementById('worklist').dataset.sort === 'severity'")
        with page.expect_popup() as popup:
            row.locator("a.report-link").click()
        report = popup.value
        report.wait_for_load_state()
        assert "covidct study report" in report.inner_text("h1")
        row.locator("a.viewer-link").click()
        page.wait_for_selector("#viewer:not([hidden])")
        assert page.evaluate("location.hash").startswith(f"#/study/{lesion.job_id}")


@pytest.mark.realdata
@pytest.mark.slow
def test_real_study_in_the_viewer(shared_data: Path, server_factory, tmp_path: Path,
                                  artifacts_dir: Path) -> None:
    """COVID-CT-MD P001 (real JPEG-Lossless DICOM, 148 slices): slice labels are its InstanceNumbers and
    the HU readout equals the reader's HU at the voxel, through the whole upload/analysis/viewer path."""
    from covidct.io import read_volume
    from covidct.io.display import display_info

    series = shared_data / "covid-ct-md" / "COVID-19" / "P001"
    volume = read_volume(series)
    hu = np.rint(volume.array).astype(np.int16)
    numbers = display_info(volume)["slice_numbers"]
    srv = server_factory(checkpoint=None)
    token = make_token(srv.db)
    job_id = _upload(srv, token, series)
    result = _wait_done(srv, token, job_id)
    assert result["display"]["slice_numbering"] == "InstanceNumber"
    vs = ViewerServer(srv, token, Study(job_id, hu, result), Study(job_id, hu, result))
    n, k = result["num_slices"], 80
    rows, cols = hu.shape[1:]
    with chromium_page(tmp_path / "profile", height=1300) as page:
        page.goto(srv.url + "/")
        sign_in(page, token)
        _open(page, vs, vs.lesion, position=k + 1)
        wait_js(page, f"document.getElementById('ct').dataset.slice === '{k}'")
        assert page.inner_text("#slice-label") == f"Im {numbers[k]} ({k + 1} of {n})"
        assert (page.inner_text("#marker-left"), page.inner_text("#marker-right")) == ("R", "L")
        for x, y in ((256, 256), (150, 260), (360, 200), (5, 5)):
            assert _hu_readout(page, x, y, cols, rows) == (int(hu[k, y, x]), x, y)
        page.screenshot(path=str(artifacts_dir / "service-viewer-p001.png"), full_page=True)
