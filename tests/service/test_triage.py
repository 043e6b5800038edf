"""`covidct triage`: worklist export, idempotent re-runs, and a run killed mid-way and restarted."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.service.conftest import corrupt_pixels, wait_for, write_study
from typer.testing import CliRunner

N_STUDIES = 8
N_EXPORT = 4
KILL_WAIT_S = 120.0


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
            "--no-explain"]
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
