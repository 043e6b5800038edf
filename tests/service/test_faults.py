"""A real `covidct serve` subprocess: concurrent uploads, and a SIGKILL mid-queue followed by a restart
(on SQLite and on a real PostgreSQL server)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tests.service.conftest import ServerProcess, make_token, wait_for, zip_bytes

from covidct.service.store import JobStore

N_CONCURRENT = 50
N_KILL = 6
FINISH_TIMEOUT_S = 240.0


def _statuses(db: Path | str) -> dict[str, str]:
    store = JobStore(db)
    try:
        return {j.id: j.status for j in store.list_jobs()}
    finally:
        store.close()


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
    store = JobStore(srv.db)
    series = [j.series_uid for j in store.list_jobs()]
    store.close()
    assert len(set(series)) == N_CONCURRENT and None not in series
    health = httpx.get(f"{srv.url}/health", headers={"Authorization": f"Bearer {token}"}).json()
    assert health["queue"]["done"] == N_CONCURRENT


def test_killed_server_finishes_every_accepted_job(server_factory: Callable[..., ServerProcess],
                                                   study_factory: Callable[[int], Path], db_url: str) -> None:
    zips = [zip_bytes(study_factory(100 + i)) for i in range(N_KILL)]
    srv = server_factory(workers=1, db=db_url)
    token = make_token(srv.db)
    accepted = [_upload(srv.url, token, z) for z in zips]
    assert all(r.status_code == 202 for r in accepted)
    srv.kill()
    at_kill = _statuses(srv.db)
    ids = {r.json()["id"] for r in accepted}
    assert set(at_kill) == ids, "every 202 must have a committed job row"
    assert list(at_kill.values()).count("done") < N_KILL, "the kill should land mid-queue"
    done_at_kill = _results(srv.db, [i for i, status in at_kill.items() if status == "done"])

    restarted = server_factory(db=srv.db, data_dir=srv.data_dir)
    assert wait_for(lambda: set(_statuses(srv.db).values()) == {"done"}, FINISH_TIMEOUT_S), _statuses(srv.db)
    headers = {"Authorization": f"Bearer {token}"}
    items = httpx.get(f"{restarted.url}/worklist", headers=headers).json()["items"]
    assert {i["id"] for i in items} == ids
    probs = [i["covid_probability"] for i in items]
    assert probs == sorted(probs, reverse=True)
    after = {i: httpx.get(f"{restarted.url}/studies/{i}", headers=headers).json() for i in ids}
    assert all(j["status"] == "done" and j["result"]["series_uid"] for j in after.values())
    for job_id, result in done_at_kill.items():
        shown = {**result, "source": Path(result["source"]).name}  # the API shows a name, not the path
        assert after[job_id]["result"] == shown, "a result stored before the kill changed"


def _results(db: Path | str, ids: list[str]) -> dict[str, dict]:
    store = JobStore(db)
    try:
        return {i: store.get(i).result for i in ids}
    finally:
        store.close()
