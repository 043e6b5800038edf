"""`covidct triage`: worklist export, idempotent re-runs, and a run killed mid-way and restarted."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.service.conftest import corrupt_pixels, wait_for, write_study
from typer.testing import CliRunner

N_STUDIES = 8
N_EXPORT = 4
KILL_WAIT_S = 120.0
VIEWER_URL = "http://covidct.example:8000"


def _cohort(study_factory: Callable[[int], Path], tmp_path: Path, first: int, n: int = N_STUDIES) -> Path:
    root = tmp_path / "cohort"
    root.mkdir()
    for i in range(first, first + n):
        (root / f"case_{i}").symlink_to(study_factory(i), target_is_directory=True)
    return root


def _rows(db: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(db) as con:
        return con.execute("select status, series_uid from jobs").fetchall()


def _triage_cmd(cohort: Path, ckpt: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "covidct.cli.main", "triage", str(cohort), "--checkpoint", str(ckpt),
            "--db", str(db), "--no-explain"]


def _check_html_worklist(html_path: Path, rows: list[dict[str, str]]) -> None:
    """Each done study links to its report file (relative, existing) and its viewer page; long UIDs are
    shortened with the full value in ``title``; the columns a radiologist sorts by are there."""
    html = html_path.read_text()
    reports = re.findall(r'<a class="report" href="([^"]+)">', html)
    assert len(reports) == N_EXPORT
    assert all((html_path.parent / href).is_file() for href in reports)
    viewers = re.findall(r'<a class="viewer" href="([^"]+)">', html)
    assert viewers == [f"{VIEWER_URL}/#/study/{r['id']}" for r in rows], "failed studies too: their message"
    for r in rows[:N_EXPORT]:
        assert f'<span title="{r["series_uid"]}">' in html, "the full UID is on hover"
        assert r["patient_id"].startswith("COVIDCT-SYNTH") and r["involvement_pct"] and r["severity_score"]
    for column in ("patient ID", "study date", "involvement", "severity", "pattern"):
        assert f"<th>{column}</th>" in html


def test_triage_exports_and_is_idempotent(tiny_checkpoint: Path, study_factory: Callable[[int], Path],
                                          tmp_path: Path) -> None:
    from covidct.cli.main import app, load_commands

    load_commands()
    cohort = _cohort(study_factory, tmp_path, 200, N_EXPORT)
    (cohort / "notes").mkdir()
    (cohort / "notes" / "notes.txt").write_text("not a CT: a side file, skipped, not a study")
    corrupt_pixels(write_study(cohort, 299))
    db, csv_path, html_path = tmp_path / "w.db", tmp_path / "worklist.csv", tmp_path / "worklist.html"
    args = ["triage", str(cohort), "--checkpoint", str(tiny_checkpoint), "--db", str(db),
            "--export", str(csv_path), "--export", str(html_path), "--out", str(tmp_path / "reports"),
            "--no-explain", "--viewer-url", VIEWER_URL]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"{N_EXPORT} analysed, 0 already done, 1 failed" in " ".join(first.output.split())
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["status"] for r in rows] == ["done"] * N_EXPORT + ["failed"]
    probs = [float(r["covid_probability"]) for r in rows[:N_EXPORT]]
    assert probs == sorted(probs, reverse=True)
    assert "DICOM" in rows[-1]["error"], "a failed study keeps its covidct message"
    assert "Worklist" in html_path.read_text()
    assert len(list((tmp_path / "reports").glob("*/report.html"))) == N_EXPORT
    _check_html_worklist(html_path, rows)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0
    assert f"0 analysed, {N_EXPORT} already done, 1 failed" in " ".join(again.output.split())
    with sqlite3.connect(db) as con:
        assert con.execute("select attempts from jobs where status = 'failed'").fetchall() == [(2,)]
    assert len(_rows(db)) == N_EXPORT + 1


def test_killed_triage_resumes_without_duplicates(tiny_checkpoint: Path, study_factory: Callable[[int], Path],
                                                  tmp_path: Path) -> None:
    cohort = _cohort(study_factory, tmp_path, 300)
    db = tmp_path / "kill.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_triage_cmd(cohort, tiny_checkpoint, db), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: db.exists() and any(s == "done" for s, _ in _safe_rows(db)), KILL_WAIT_S,
                        interval=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    at_kill = [s for s, _ in _rows(db)]
    assert at_kill.count("done") < N_STUDIES, "the kill should land mid-run"
    rerun = subprocess.run(_triage_cmd(cohort, tiny_checkpoint, db), env=env, capture_output=True, text=True,
                           timeout=KILL_WAIT_S)
    assert rerun.returncode == 0, rerun.stderr
    rows = _rows(db)
    assert len(rows) == N_STUDIES and {s for s, _ in rows} == {"done"}
    assert len({u for _, u in rows}) == N_STUDIES


def _safe_rows(db: Path) -> list[tuple[str, str | None]]:
    try:
        return _rows(db)
    except sqlite3.OperationalError:
        return []


def test_predict_writes_one_report_per_study_or_refuses_with_one(study_factory: Callable[[int], Path],
                                                                   tmp_path: Path) -> None:
    """A folder holding two studies' files mixed -> two reports; --one refuses, listing them."""
    from covidct.cli.main import app, load_commands

    load_commands()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in (410, 411):
        for f in study_factory(i).iterdir():
            (mixed / f"{i}_{f.name}").symlink_to(f)
    (mixed / "labels.csv").write_text("file,label\n")
    refused = CliRunner().invoke(app, ["predict", str(mixed), "--one", "--out", str(tmp_path / "r1")])
    assert refused.exit_code == 2
    assert "holds 2 studies" in refused.output and refused.output.count("series") >= 2
    assert not (tmp_path / "r1").exists()
    res = CliRunner().invoke(app, ["predict", str(mixed), "--no-explain", "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and len({line["series_uid"] for line in lines}) == 2
    assert len(list((tmp_path / "r2").glob("*/report.html"))) == 2


def test_rerun_with_another_analysis_version_adds_rows(study_factory: Callable[[int], Path],
                                                       tmp_path: Path) -> None:
    """Jobs are keyed by series + analysis version: the same version skips, another one adds rows."""
    from covidct.service.store import JobStore
    from covidct.service.triage import enqueue, study_jobs

    cohort = _cohort(study_factory, tmp_path, 420, 2)
    store = JobStore(tmp_path / "k.db")
    jobs = study_jobs(cohort)
    ids, skipped, _ = enqueue(store, jobs, "model@v1")
    assert len(ids) == 2 and skipped == 0
    for job_id in ids:
        store.claim(job_id)
        store.complete(job_id, {"series_uid": "ignored", "predicted_class": "Normal"})
    assert enqueue(store, jobs, "model@v1")[:2] == ([], 2)
    ids2, skipped2, _ = enqueue(store, jobs, "model@v2")
    assert len(ids2) == 2 and skipped2 == 0
    views = store.list_jobs(sort="created_at")
    assert len(views) == 4 and len({v.job_key for v in views}) == 4
    assert {v.target_series_uid for v in views} == {j.series_uid for j in jobs}


@pytest.mark.realdata
def test_triage_covid_ct_md_makes_three_jobs(shared_data: Path, tmp_path: Path) -> None:
    """Three studies, each beside a *_slice_labels.csv: three jobs (the old folder walk made six)."""
    from covidct.service.store import JobStore
    from covidct.service.triage import enqueue, study_jobs

    store = JobStore(tmp_path / "md.db")
    ids, _, _ = enqueue(store, study_jobs(shared_data / "covid-ct-md"), "quantitative-ct@test")
    rows = store.list_jobs()
    assert len(ids) == 3 == len(rows) and all(r.target_series_uid for r in rows)
    assert sorted(Path(r.source_path).name for r in rows) == ["P001", "cap001", "normal001"]


def test_old_database_gets_the_new_columns(tmp_path: Path) -> None:
    """A worklist written before the archive-triage columns opens, keeps its rows, and gains them."""
    from covidct.service.store import JobStore

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:
        con.execute("create table jobs (id varchar(32) primary key, series_uid varchar(128) unique, "
                    "study_uid varchar(128), source_path text, status varchar(16), error text, result json, "
                    "probabilities json, predicted_class varchar(64), covid_probability float, attempts "
                    "integer, created_at datetime, updated_at datetime)")
        con.execute("insert into jobs (id, source_path, status, attempts, created_at, updated_at) values "
                    "('a', '/x', 'done', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    store = JobStore(db)
    (row,) = store.list_jobs()
    assert row.id == "a" and row.job_key is None and row.node is None
    args = {"series_uid": "s", "study_uid": None, "version": "v"}
    assert store.add_keyed_job("s@v", "/y", **args)[1] is True
    assert store.add_keyed_job("s@v", "/y", **args)[1] is False
