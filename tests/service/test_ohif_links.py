"""OHIF links and configuration: `covidct serve --ohif-url` gives each study its OHIF view (``ohif_url`` in
the API data); `ohif_app_config` writes the app-config.js the OHIF tests serve (tests/ohif/)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_token, wait_done, zip_bytes
from typer.testing import CliRunner

from covidct.cli.app import app as cli_app
from covidct.cli.main import load_commands
from covidct.errors import ConfigError
from covidct.service.api import ServiceSettings, create_app
from covidct.service.ohif import check_dicomweb_root, ohif_app_config, ohif_study_url
from covidct.service.predictor import Predictor

OHIF_ROOT = "https://pacs.example.org/ohif"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1234"
CONFIG_ERROR_EXIT = 2


def test_study_url_opens_the_viewer_route_with_the_study() -> None:
    expected = f"{OHIF_ROOT}/viewer?StudyInstanceUIDs={STUDY_UID}"
    assert ohif_study_url(OHIF_ROOT, STUDY_UID) == expected
    assert ohif_study_url(OHIF_ROOT + "/", STUDY_UID) == expected


@pytest.mark.parametrize("uid", [None, "", "1.2.<script>", "1.2&x=3", "1." * 40 + "1", "1..2"])
def test_no_link_for_a_missing_or_malformed_uid(uid: str | None) -> None:
    assert ohif_study_url(OHIF_ROOT, uid) is None


@pytest.mark.parametrize("root", ["javascript:alert(1)", "ftp://pacs/ohif", "/ohif", "pacs.example.org",
                                  "https://pacs/ohif?x=1", "https://pacs/ohif#top", "https://"])
def test_a_root_that_is_not_an_http_url_is_refused(root: str) -> None:
    with pytest.raises(ConfigError, match="absolute http"):
        ohif_study_url(root, STUDY_UID)
    with pytest.raises(ConfigError, match="absolute http"):
        ServiceSettings(checkpoints=[], ohif_url=root)


def test_cli_refuses_a_bad_ohif_url_without_traceback(tmp_path: Path) -> None:
    load_commands()
    res = CliRunner().invoke(cli_app, ["serve", "--db", str(tmp_path / "x.db"), "--ohif-url", "javascript:x"])
    assert res.exit_code == CONFIG_ERROR_EXIT, res.output
    assert "absolute http(s) URL" in res.output and "Traceback" not in res.output


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_ohif_config_writes_javascript_that_sets_one_dicomweb_source(tmp_path: Path) -> None:
    """`covidct ohif-config` writes app-config.js; node evaluates it as OHIF's index.html does (a script
    setting window.config)."""
    load_commands()
    path = tmp_path / "app-config.js"
    res = CliRunner().invoke(cli_app, ["ohif-config", "/dicom-web/", "--out", str(path)])
    assert res.exit_code == 0, res.output
    script = f"const window = {{}};\n{path.read_text()}\nprocess.stdout.write(JSON.stringify(window.config));"
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30, check=True)
    config = json.loads(done.stdout)
    (source,) = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    roots = {source["configuration"][k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")}
    assert roots == {"/dicom-web"}


@pytest.mark.parametrize("root", ["https://pacs.example.org/dicom-web", "/dicom-web", "/pacs/dicom-web/"])
def test_dicomweb_root_may_be_absolute_or_on_ohifs_origin(root: str) -> None:
    assert check_dicomweb_root(root) == root.rstrip("/")


@pytest.mark.parametrize("root", ["javascript:alert(1)", "dicom-web", "/", "//evil.example/dicom-web",
                                  "ftp://pacs/dicom-web", "/dicom-web?x=1"])
def test_a_bad_dicomweb_root_is_refused(root: str) -> None:
    with pytest.raises(ConfigError, match="DICOMweb root"):
        ohif_app_config(root)
    load_commands()
    res = CliRunner().invoke(cli_app, ["ohif-config", root])
    assert res.exit_code == CONFIG_ERROR_EXIT and "Traceback" not in res.output


@pytest.fixture()
def ohif_client(tmp_path: Path, tiny_checkpoint: Path, predictor: Predictor) -> Iterator[TestClient]:
    settings = ServiceSettings(checkpoints=[str(tiny_checkpoint)], db=str(tmp_path / "api.db"),
                               data_dir=str(tmp_path / "data"), ohif_url=OHIF_ROOT + "/")
    token = make_token(tmp_path / "api.db")
    with TestClient(create_app(settings, predictor=predictor)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client



def test_served_study_and_worklist_row_carry_the_ohif_link(ohif_client: TestClient, one_study: Path) -> None:
    study_uid = pydicom.dcmread(next(p for p in sorted(one_study.iterdir()) if p.is_file()),
                                stop_before_pixels=True).StudyInstanceUID
    expected = f"{OHIF_ROOT}/viewer?StudyInstanceUIDs={study_uid}"
    resp = ohif_client.post("/studies", files=[("files", ("s.zip", zip_bytes(one_study), "application/zip"))])
    assert resp.status_code == 202, resp.text
    job = wait_done(ohif_client, resp.json()["id"])
    assert job["status"] == "done", job
    assert job["ohif_url"] == expected and job["result"]["ohif_url"] == expected
    (row,) = ohif_client.get("/worklist").json()["items"]
    assert row["ohif_url"] == expected


def test_no_ohif_link_without_the_setting(tmp_path: Path, tiny_checkpoint: Path, predictor: Predictor,
                                          one_study: Path) -> None:
    settings = ServiceSettings(checkpoints=[str(tiny_checkpoint)], db=str(tmp_path / "api.db"),
                               data_dir=str(tmp_path / "data"))
    token = make_token(tmp_path / "api.db")
    with TestClient(create_app(settings, predictor=predictor)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        resp = client.post("/studies", files=[("files", ("s.zip", zip_bytes(one_study), "application/zip"))])
        job = wait_done(client, resp.json()["id"])
        assert job["status"] == "done" and job["ohif_url"] is None and "ohif_url" not in job["result"]
        assert client.get("/worklist").json()["items"][0]["ohif_url"] is None
