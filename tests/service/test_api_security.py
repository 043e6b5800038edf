"""Every route protected (walked from the app's route table), security headers on every answer, the
browser session cookie and its same-origin check, hostile names answered 4xx (never 500), and the
worklist's columns and sort keys. In-process (FastAPI TestClient) on a real SQLite file."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount
from tests.service.conftest import make_token, zip_bytes

from covidct.service.api import ServiceSettings, create_app
from covidct.service.predictor import Predictor
from covidct.service.security import SESSION_COOKIE
from covidct.service.uploads import MAX_SAVED_NAME_BYTES

PUBLIC = {("GET", "/"), ("GET", "/health"), ("POST", "/login"), ("POST", "/logout"),
          ("GET", "/openapi.json")}
"""The only routes answered without a token (the page, liveness, sign-in/out, the API description)."""
PUBLIC_MOUNTS = {"/static"}
PATH_PARAMS = {"job_id": "0" * 32, "k": "0"}
JOB_TIMEOUT_S = 120.0
HOSTILE_NAMES = {
    "300 characters": "a" * 296 + ".dcm",
    "200 x e-acute": "\u00e9" * 200,
    "NUL": "a\x00b.dcm",
    "parent folders": "../../../etc/passwd",
    "control characters": "a\x01\x1b[31m\r\nb.dcm",
    "only dots": "..",
}


@pytest.fixture()
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """A service without checkpoints (quantitative CT only) and a token; the client sends no token."""
    settings = ServiceSettings(checkpoints=[], db=str(tmp_path / "api.db"), data_dir=str(tmp_path / "data"))
    token = make_token(tmp_path / "api.db")
    with TestClient(create_app(settings, predictor=Predictor([])), base_url="http://covidct.test") as c:
        yield c, token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path with example parameters) of every API route of the app."""
    out = []
    for route in client.app.routes:
        if isinstance(route, APIRoute) or type(route).__name__ == "Route":
            path = route.path_format.format(**PATH_PARAMS)
            out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def test_every_route_but_the_public_ones_needs_a_token(app_client: tuple[TestClient, str]) -> None:
    client, token = app_client
    routes = _routes(client)
    assert ("GET", "/studies/" + PATH_PARAMS["job_id"] + "/lesions/0.png") in routes
    answered_without_token = set()
    for method, path in routes:
        for headers in ({}, _bearer("wrong"), {"Cookie": f"{SESSION_COOKIE}=wrong"}):
            resp = client.request(method, path, headers=headers)
            if resp.status_code != 401:
                answered_without_token.add((method, path))
                continue
            assert resp.status_code == 401, (method, path, headers)
    assert answered_without_token == PUBLIC, "a route without auth must be listed in PUBLIC"
    mounts = {r.path for r in client.app.routes if isinstance(r, Mount)}
    assert mounts == PUBLIC_MOUNTS
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/worklist", headers=_bearer(token)).status_code == 200


def test_security_headers_on_every_answer(app_client: tuple[TestClient, str], one_study: Path) -> None:
    client, token = app_client
    resp = client.post("/studies", headers=_bearer(token),
                       files=[("files", ("s.zip", zip_bytes(one_study), "application/zip"))])
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while client.get(f"/studies/{job_id}", headers=_bearer(token)).json()["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    answers = {
        "page": client.get("/"), "script": client.get("/static/app.js"), "health": client.get("/health"),
        "401": client.get("/worklist"), "404": client.get("/studies/nope", headers=_bearer(token)),
        "report": client.get(f"/studies/{job_id}/report.html", headers=_bearer(token)),
        "hu": client.get(f"/studies/{job_id}/hu/0", headers=_bearer(token)),
    }
    for what, resp in answers.items():
        csp = resp.headers.get("content-security-policy", "")
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives.get("script-src") == "'self'", (what, csp)
        assert "unsafe-inline" not in directives["script-src"] and "frame-ancestors" in directives
        assert resp.headers["x-content-type-options"] == "nosniff", what
    assert answers["report"].status_code == 200 and "covidct study report" in answers["report"].text
    assert "<script" not in answers["report"].text
    assert "<script" not in answers["page"].text.replace('<script type="module" src="/static/app.js">', "")


def test_raw_hu_route_gives_the_stored_slice(app_client: tuple[TestClient, str], one_study: Path) -> None:
    import numpy as np

    from covidct.io import read_volume

    client, token = app_client
    job_id = client.post("/studies", headers=_bearer(token),
                         files=[("files", ("s.zip", zip_bytes(one_study), "application/zip"))]).json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while client.get(f"/studies/{job_id}", headers=_bearer(token)).json()["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    volume = read_volume(one_study)
    k = volume.num_slices // 2
    resp = client.get(f"/studies/{job_id}/hu/{k}", headers=_bearer(token))
    rows, cols = int(resp.headers["x-rows"]), int(resp.headers["x-columns"])
    got = np.frombuffer(resp.content, dtype="<i2").reshape(rows, cols)
    assert resp.headers["x-is-hu"] == "true"
    np.testing.assert_array_equal(got, np.rint(volume.array[k]).astype(np.int16))
    assert client.get(f"/studies/{job_id}/hu/{volume.num_slices}", headers=_bearer(token)).status_code == 404
    windows = client.get("/windows", headers=_bearer(token)).json()
    assert windows["lung"] == {"center": -600.0, "width": 1500.0}
    assert windows["mediastinum"] == {"center": 40.0, "width": 400.0}
    assert windows["bone"] == {"center": 400.0, "width": 1800.0}


def test_cookie_sign_in_same_origin_check_and_logout(app_client: tuple[TestClient, str]) -> None:
    client, token = app_client
    assert client.post("/login", json={"token": "wrong"}).status_code == 401
    assert client.post("/login", content=b"not json").status_code == 400
    evil = {"Origin": "http://evil.test"}
    assert client.post("/login", json={"token": token}, headers=evil).status_code == 403
    resp = client.post("/login", json={"token": token}, headers={"Origin": "http://covidct.test"})
    assert resp.status_code == 200 and resp.json()["name"] == "tester"
    cookie = resp.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert client.get("/session").json() == {"signed_in": True, "name": "tester"}
    assert client.get("/worklist").status_code == 200
    upload = [("files", ("x.zip", b"junk", "application/zip"))]
    for headers, code in (({"Origin": "http://evil.test"}, 403), ({}, 403),
                          ({"Referer": "http://evil.test/page"}, 403),
                          ({"Origin": "http://covidct.test"}, 400),
                          ({"Referer": "http://covidct.test/#/study/x"}, 400)):
        resp = client.post("/studies", files=upload, headers=headers)
        assert resp.status_code == code, (headers, resp.text)
    # API clients: the Bearer header needs no Origin
    assert client.post("/studies", files=upload, headers=_bearer(token)).status_code == 400
    resp = client.post("/logout")
    assert resp.status_code == 200 and 'covidct_session=""' in resp.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/session").status_code == 401


def test_the_cookie_is_a_server_side_session_that_sign_out_and_revocation_end(
        app_client: tuple[TestClient, str]) -> None:
    """The cookie holds a session id, never the API token; signing out ends the session on the server,
    so a copied cookie stops working; revoking the token ends its sessions; an expired one is refused."""
    client, token = app_client
    store = client.app.state.svc.store
    assert client.post("/login", json={"token": token}).status_code == 200
    session_id = client.cookies[SESSION_COOKIE]
    assert session_id and token not in session_id and session_id not in token
    copied = {"Cookie": f"{SESSION_COOKIE}={session_id}"}
    client.cookies.clear()
    assert client.get("/worklist", headers=copied).status_code == 200
    assert client.post("/logout", headers=copied).status_code == 200
    resp = client.get("/worklist", headers=copied)
    assert resp.status_code == 401 and "session has ended" in resp.json()["detail"]
    assert client.get("/worklist", headers=_bearer(token)).status_code == 200  # the token still works

    client.post("/login", json={"token": token})
    again = {"Cookie": f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"}
    client.cookies.clear()
    assert client.get("/session", headers=again).status_code == 200
    assert store.revoke_token("tester")
    assert client.get("/session", headers=again).status_code == 401

    store.create_token("second")
    stale = store.create_session("second", max_age_s=-1)  # already expired
    assert store.check_session(stale) is None
    assert client.get("/session", headers={"Cookie": f"{SESSION_COOKIE}={stale}"}).status_code == 401
    fresh = store.create_session("second", max_age_s=60)
    assert store.check_session(fresh) == "second"


def _dicom_bytes(folder: Path) -> bytes:
    return sorted(folder.iterdir())[0].read_bytes()


def test_hostile_names_never_give_500(app_client: tuple[TestClient, str], one_study: Path,
                                      tmp_path: Path) -> None:
    client, token = app_client
    dicom = _dicom_bytes(one_study)
    for what, name in HOSTILE_NAMES.items():  # loose files: stored under a safe, short name
        resp = client.post("/studies", headers=_bearer(token),
                           files=[("files", (name, dicom, "application/dicom"))])
        assert resp.status_code == 202, (what, resp.status_code, resp.text)
        saved = list((tmp_path / "data" / "jobs" / resp.json()["id"] / "upload").iterdir())
        assert len(saved) == 1 and len(saved[0].name.encode()) <= MAX_SAVED_NAME_BYTES, (what, saved)
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in saved[0].name), (what, saved)
    for what, name in HOSTILE_NAMES.items():  # zip members: refused with a message
        if what == "NUL":
            continue  # zipfile cuts a name at NUL when writing; uploads.safe_member_name refuses raw ones
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(zipfile.ZipInfo(name if name != ".." else "../x"), dicom)
        resp = client.post("/studies", headers=_bearer(token),
                           files=[("files", ("s.zip", buf.getvalue(), "application/zip"))])
        if what == "control characters":  # a legal (if odd) file name: accepted
            assert resp.status_code == 202, (what, resp.text)
            continue
        assert resp.status_code == 400, (what, resp.status_code, resp.text)
        assert "Zip member" in resp.json()["detail"], (what, resp.json())
    hostile_paths = ["/studies/" + "a" * 300, "/studies/" + "%C3%A9" * 200, "/studies/a%00b",
                     "/studies/..%2F..%2Fetc%2Fpasswd", "/studies/%01%1b", "/studies/x/slices/-1.png",
                     "/studies/" + "0" * 32 + "/hu/99999999999999999999999"]
    for path in hostile_paths:
        resp = client.get(path, headers=_bearer(token))
        assert 400 <= resp.status_code < 500, (path, resp.status_code)
    long_cookie = {"Cookie": f"{SESSION_COOKIE}={'y' * 4000}"}
    for headers in (_bearer("x" * 100_000), _bearer("\u00e9" * 200), long_cookie):
        resp = client.get("/worklist", headers={k: v.encode("utf-8") for k, v in headers.items()})
        assert resp.status_code == 401
    resp = client.get("/worklist", params={"sort": "\u00e9" * 200}, headers=_bearer(token))
    assert resp.status_code == 400 and "sort key" in resp.json()["detail"]
    assert client.get("/health").json()["status"] == "ok"


def test_worklist_columns_and_sort_keys(app_client: tuple[TestClient, str]) -> None:
    from covidct.service.store import JobStore

    client, token = app_client
    store = JobStore(client.app.state.svc.settings.db)
    rows = {"low": (0.02, 1, "PID-LOW"), "high": (0.40, 9, None), "mid": (0.10, 12, "PID-MID")}
    ids = {}
    for name, (fraction, severity, patient) in rows.items():
        ids[name] = store.add_job(f"/nowhere/{name}")
        store.complete(ids[name], {
            "abnormal_fraction": fraction, "series_uid": f"1.2.3.{name}", "num_slices": 10,
            "quantitative": {"available": True, "severity_total": severity, "severity_max": 25,
                             "pattern": {"category": "typical"}},
            "display": {"patient_id": patient, "study_date": "20200305", "series_description": f"S {name}"},
            "ohif_url": "javascript:alert(1)" if name == "low" else f"https://ohif.test/{name}",
        })
    failed = store.add_job("/nowhere/failed")
    store.fail(failed, "Cannot read 'x.dcm': truncated.")
    store.close()

    def order(**params: str) -> list[str]:
        items = client.get("/worklist", params=params, headers=_bearer(token)).json()["items"]
        return [next((n for n, i in ids.items() if i == j["id"]), "failed") for j in items]

    assert order(sort="abnormal_fraction") == ["high", "mid", "low", "failed"]
    assert order(sort="involvement", order="asc") == ["low", "mid", "high", "failed"]
    assert order(sort="severity") == ["mid", "high", "low", "failed"]
    items = {j["id"]: j for j in client.get("/worklist", headers=_bearer(token)).json()["items"]}
    high, low, mid = items[ids["high"]], items[ids["low"]], items[ids["mid"]]
    assert high["patient_id"] == "anonymous" and mid["patient_id"] == "PID-MID"
    assert mid["involvement_pct"] == 10.0 and mid["severity_score"] == 12 and mid["pattern"] == "typical"
    assert mid["study_date"] == "20200305" and mid["description"] == "S mid"
    assert mid["predicted_class"] is None and mid["covid_probability"] is None
    links = {"viewer": f"/#/study/{ids['mid']}", "report": f"/studies/{ids['mid']}/report.html"}
    assert mid["links"] == links
    assert mid["ohif_url"] == "https://ohif.test/mid" and low["ohif_url"] is None
    assert "source_path" not in mid
    assert items[failed]["status"] == "failed" and "truncated" in items[failed]["error"]


def test_an_older_database_gets_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from covidct.service.store import JobStore

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:  # the jobs table as the previous release created it
        con.execute("CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, series_uid VARCHAR(128) UNIQUE, "
                    "study_uid VARCHAR(128), source_path TEXT, status VARCHAR(16), error TEXT, result JSON, "
                    "probabilities JSON, predicted_class VARCHAR(64), covid_probability FLOAT, "
                    "attempts INTEGER, created_at DATETIME, updated_at DATETIME)")
    store = JobStore(db)
    job = store.add_job("/x")
    store.complete(job, {"abnormal_fraction": 0.25, "quantitative": {"available": True, "severity_total": 7}})
    view = store.list_jobs(sort="severity")[0]
    assert (view.abnormal_fraction, view.severity_score) == (0.25, 7)
    store.close()
