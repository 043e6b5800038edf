"""REST API in-process (FastAPI TestClient, real SQLite file, real Predictor and worker thread)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_token, wait_done, zip_bytes

from covidct import RESEARCH_USE_STATEMENT
from covidct.service.api import ServiceSettings, create_app
from covidct.service.predictor import Predictor

MAX_UPLOAD_MB = 2.0


@pytest.fixture()
def client(tmp_path: Path, tiny_checkpoint: Path, predictor: Predictor) -> Iterator[TestClient]:
    settings = ServiceSettings(checkpoints=[str(tiny_checkpoint)], db=str(tmp_path / "api.db"),
                               data_dir=str(tmp_path / "data"), workers=1, max_upload_mb=MAX_UPLOAD_MB)
    token = make_token(tmp_path / "api.db")
    with TestClient(create_app(settings, predictor=predictor)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c



def upload_zip(client: TestClient, data: bytes, name: str = "study.zip"):
    return client.post("/studies", files=[("files", (name, data, "application/zip"))])


def test_zip_upload_gives_the_predictor_result(client: TestClient, predictor: Predictor,
                                               one_study: Path) -> None:
    resp = upload_zip(client, zip_bytes(one_study))
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.headers["location"] == f"/studies/{job_id}"
    job = wait_done(client, job_id)
    assert job["status"] == "done", job
    direct = predictor.predict(one_study).to_dict()
    got = job["result"]
    assert got["series_uid"] == direct["series_uid"] and got["series_uid"]
    assert got["predicted_class"] == direct["predicted_class"]
    for name, p in direct["probabilities"].items():
        assert got["probabilities"][name] == pytest.approx(p, abs=1e-5)
    assert np.allclose(got["slice_scores"], direct["slice_scores"], atol=1e-5)
    assert got["research_use"] == RESEARCH_USE_STATEMENT
    assert set(got["timings"]) >= {"read", "preprocess", "model", "explain", "report"}
    data_dir = str(client.app.state.svc.data_dir)
    shown = client.get(f"/studies/{job_id}").text
    assert data_dir not in shown and "/jobs/" not in shown, "the study shows a server path"
    assert got["source"] and "/" not in got["source"]  # a name, not a path

    k = got["key_slices"][0]
    for window in ("lung", "mediastinum"):
        img = client.get(f"/studies/{job_id}/slices/{k}.png", params={"window": window})
        assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    assert client.get(f"/studies/{job_id}/slices/{k}.png", params={"window": "soft"}).status_code == 400
    assert client.get(f"/studies/{job_id}/slices/999.png").status_code == 404
    overlay = client.get(f"/studies/{job_id}/overlay/{k}.png")
    assert got["has_heatmap"] and overlay.status_code == 200 and overlay.content[:4] == b"\x89PNG"

    wl = client.get("/worklist").json()
    assert wl["count"] == 1 and wl["items"][0]["id"] == job_id
    assert client.get("/worklist", params={"status": "failed"}).json()["count"] == 0


def test_bad_inputs_answer_4xx_with_a_message(client: TestClient, one_study: Path) -> None:
    good = upload_zip(client, zip_bytes(one_study))
    assert good.status_code == 202
    cases = {
        "non-DICOM zip": (upload_zip(client, _zip({"a.txt": b"hello"})), 400, "no DICOM"),
        "zip-slip": (upload_zip(client, _zip({"../../evil.dcm": b"\0" * 132})), 400, "zip-slip"),
        "not a zip": (client.post("/studies", files=[("files", ("x.bin", b"junk", "a/b"))]), 400, "DICOM"),
        "oversized": (upload_zip(client, b"0" * int((MAX_UPLOAD_MB + 1) * 1024 * 1024)), 413, "limit"),
        "unknown id": (client.get("/studies/doesnotexist"), 404, "No study"),
        "bad sort": (client.get("/worklist", params={"sort": "nope"}), 400, "sort key"),
    }
    for what, (resp, code, text) in cases.items():
        assert resp.status_code == code, (what, resp.status_code, resp.text)
        assert text in resp.json()["detail"], (what, resp.json())
    assert client.get("/health").json()["status"] == "ok"
    jobs = client.get("/worklist").json()["items"]
    assert [j["id"] for j in jobs] == [good.json()["id"]], "refused uploads must not create jobs"
    assert wait_done(client, good.json()["id"])["status"] == "done"


def test_tokens_are_required(client: TestClient) -> None:
    token = client.headers.pop("Authorization")
    for path in ("/worklist", "/studies/abc"):
        resp = client.get(path)
        assert resp.status_code == 401 and "Missing API token" in resp.json()["detail"]
        assert resp.headers["www-authenticate"] == "Bearer"
    resp = client.get("/worklist", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401 and "Unknown API token" in resp.json()["detail"]
    assert client.post("/studies", files=[("files", ("a.zip", b"x", "application/zip"))]).status_code == 401
    assert client.get("/health").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "covidct" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/worklist", headers={"Authorization": token}).status_code == 200


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
