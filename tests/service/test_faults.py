"""A real `covidct serve` subprocess: concurrent uploads, and a SIGKILL mid-queue followed by a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tests.service.conftest import ServerProcess, make_token, wait_for, zip_bytes

N_CONCURRENT = 50
N_KILL = 6
FINISH_TIMEOUT_S = 240.0


def _statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("select id, status from jobs").fetchall())


def _upload(url: str, token: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/studies", files=[("files", ("s.zip", data, "application/zip"))],
                      headers={"Authorization": f"Bearer {token}"}, timeout=120)


def test_concurrent_uploads_all_finish(server_factory: Callable[..., ServerProcess],
                                       study_factory: Callable[[int], Path], tmp_path: Path) -> None:
    zips = [zip_bytes(study_factory(i)) for i in range(N_CONCURRENT)]
    srv = server_factory(workers=2, explain=False)  # the queue under load; explanations are tested elsewhere
    token = make_token(srv.db)
    with ThreadPoolExecutor(max_workers=N_CONCURRENT) as pool:
        responses = list(pool.map(lambda z: _upload(srv.url, token, z), zips))
    errors = [r.text for r in responses if r.is_error]
    assert [r.status_code for r in responses] == [202] * N_CONCURRENT, errors
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == N_CONCURRENT
    finished = ("done", "failed")
    assert wait_for(lambda: all(s in finished for s in _statuses(srv.db).values()), FINISH_TIMEOUT_S)
    statuses = _statuses(srv.db)
    assert set(statuses) == ids and set(statuses.values()) == {"done"}
    with sqlite3.connect(srv.db) as con:
        series = [r[0] for r in con.execute("select series_uid from jobs")]
    assert len(set(series)) == N_CONCURRENT and None not in series
    assert httpx.get(f"{srv.url}/health").json()["queue"]["done"] == N_CONCURRENT


def test_killed_server_finishes_every_accepted_job(server_factory: Callable[..., ServerProcess],
                                                   study_factory: Callable[[int], Path]) -> None:
    zips = [zip_bytes(study_factory(100 + i)) for i in range(N_KILL)]
    srv = server_factory(workers=1)
    token = make_token(srv.db)
    accepted = [_upload(srv.url, token, z) for z in zips]
    assert all(r.status_code == 202 for r in accepted)
    srv.kill()
    at_kill = _statuses(srv.db)
    ids = {r.json()["id"] for r in accepted}
    assert set(at_kill) == ids, "every 202 must have a committed job row"
    assert list(at_kill.values()).count("done") < N_KILL, "the kill should land mid-queue"

    restarted = server_factory(db=srv.db, data_dir=srv.data_dir)
    assert wait_for(lambda: set(_statuses(srv.db).values()) == {"done"}, FINISH_TIMEOUT_S), _statuses(srv.db)
    headers = {"Authorization": f"Bearer {token}"}
    items = httpx.get(f"{restarted.url}/worklist", headers=headers).json()["items"]
    assert {i["id"] for i in items} == ids
    probs = [i["covid_probability"] for i in items]
    assert probs == sorted(probs, reverse=True)
