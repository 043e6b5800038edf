"""The job store on a real SQLite file and a real PostgreSQL server: tokens, claiming, re-queueing,
uniqueness, worklist order, and jobs that outlive the process that stored them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from covidct.errors import ServiceError
from covidct.service.store import JobStore, hash_token


@pytest.fixture()
def store(db_url: str) -> Iterator[JobStore]:
    s = JobStore(db_url)
    yield s
    s.close()


def _result(series: str, p: float, cls: str = "COVID-19") -> dict:
    return {"series_uid": series, "study_uid": "1.2", "probabilities": {"COVID-19": p},
            "predicted_class": cls, "covid_probability": p, "warnings": []}


def test_backend_is_the_one_asked_for(store: JobStore, db_url: str) -> None:
    expected = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    assert store.engine.dialect.name == expected
    with store.engine.connect() as con:
        version = con.execute(text("select version()" if expected == "postgresql" else
                                   "select sqlite_version()")).scalar_one()
    assert ("PostgreSQL" in version) == (expected == "postgresql")


def test_token_is_stored_only_as_sha256(store: JobStore) -> None:
    token = store.create_token("alice")
    assert store.check_token(token) == "alice"
    assert store.check_token(token + "x") is None
    with store.engine.connect() as con:
        rows = [tuple(r) for r in con.execute(text("select name, token_sha256 from api_tokens"))]
    assert rows == [("alice", hash_token(token))]
    assert token not in str(rows)
    with pytest.raises(ServiceError, match="already exists"):
        store.create_token("alice")


def test_claim_complete_and_requeue(store: JobStore) -> None:
    a = store.add_job("/a")
    b = store.add_job("/b")
    first = store.claim_next()
    assert first is not None and first.id == a and first.status == "running"
    assert store.requeue_stale() == 1
    assert store.get(a).status == "queued"
    store.complete(store.claim_next().id, _result("1.1", 0.2))
    store.fail(store.claim_next().id, "bad study")
    assert store.claim_next() is None
    assert store.get(b).error == "bad study"
    assert store.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 1}
    assert store.requeue_failed() == 1


def test_series_uid_unique_marks_duplicate(store: JobStore) -> None:
    a, b = store.add_job("/a"), store.add_job("/b")
    store.complete(a, _result("1.9", 0.5))
    store.complete(b, _result("1.9", 0.5))
    dup = store.get(b)
    assert dup.status == "done" and dup.series_uid is None and dup.result["duplicate_of"] == a


def test_worklist_sorted_by_covid_probability(store: JobStore) -> None:
    for i, p in enumerate([0.1, 0.9, 0.5]):
        store.complete(store.add_job(f"/s{i}"), _result(f"1.{i}", p, "COVID-19" if p > 0.4 else "Normal"))
    store.add_job("/queued")
    probs = [j.covid_probability for j in store.list_jobs()]
    assert probs == [0.9, 0.5, 0.1, None]
    assert [j.covid_probability for j in store.list_jobs(predicted_class="Normal")] == [0.1]
    assert len(store.list_jobs(status="queued")) == 1
    with pytest.raises(ServiceError, match="Unknown status"):
        store.list_jobs(status="bogus")


def test_token_cli_prints_the_token_once(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidct.cli.main import app, load_commands

    load_commands()
    db = tmp_path / "t.db"
    res = CliRunner().invoke(app, ["token", "create", "bob", "--db", str(db)])
    assert res.exit_code == 0, res.output
    token = res.stdout.strip()
    assert JobStore(db).check_token(token) == "bob"
    dup = CliRunner().invoke(app, ["token", "create", "bob", "--db", str(db)])
    assert dup.exit_code != 0 and "already exists" in dup.output
    assert CliRunner().invoke(app, ["token", "revoke", "bob", "--db", str(db)]).exit_code == 0
    assert JobStore(db).check_token(token) is None


KILLED_WRITER = """
import json, sys, time
from covidct.service.store import JobStore
store = JobStore(sys.argv[1])
ids = [store.add_job(f"/study/{i}") for i in range(3)]
store.complete(store.claim_next().id, json.loads(sys.argv[2]))
store.claim_next()
print(json.dumps(ids), flush=True)
time.sleep(600)
"""


def test_jobs_survive_a_hard_kill_of_the_writer(db_url: str) -> None:
    """A process commits jobs (one done, one running, one queued) and is SIGKILLed; a new process sees
    all of them, with the stored result, and re-queues the one left running."""
    result = _result("1.2.3", 0.75)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, db_url, json.dumps(result)],
                            stdout=subprocess.PIPE, text=True)
    try:
        ids = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -9
    store = JobStore(db_url)
    try:
        assert [store.get(i).status for i in ids] == ["done", "running", "queued"]
        done = store.get(ids[0])
        assert done.result == result and done.covid_probability == 0.75 and done.series_uid == "1.2.3"
        assert store.requeue_stale() == 1
        assert [store.get(i).status for i in ids] == ["done", "queued", "queued"]
    finally:
        store.close()


def test_plain_postgresql_url_uses_psycopg(postgres) -> None:
    url = postgres.create_database().replace("postgresql+psycopg://", "postgresql://")
    store = JobStore(url)
    try:
        assert store.engine.dialect.driver == "psycopg"
        assert store.get(store.add_job("/a")).status == "queued"
    finally:
        store.close()


def test_unreachable_database_is_a_service_error() -> None:
    from tests.service.conftest import free_port

    with pytest.raises(ServiceError, match=r"Cannot open the job database postgresql\+psycopg://u:\*\*\*@"):
        JobStore(f"postgresql://u:secret@127.0.0.1:{free_port()}/nothing")


def test_serve_with_an_unreachable_database_prints_the_message(tmp_path: Path) -> None:
    from tests.service.conftest import free_port
    from typer.testing import CliRunner

    from covidct.cli.main import app, load_commands

    load_commands()
    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/nothing"
    res = CliRunner().invoke(app, ["serve", "--checkpoint", str(tmp_path / "none.ckpt"), "--db", url,
                                   "--port", str(free_port())])
    assert res.exit_code != 0
    assert "Cannot open the job database" in res.output and "secret" not in res.output
    assert "Traceback" not in res.output
