"""The fuzz corpus (tests/fuzz) sent through a real `covidct serve` as uploads.

Each case of the upload-able families (DICOM series edits, zips, NIfTI, odd names) is uploaded as it
is (a file) or zipped (a folder). Every answer must be 202 or 4xx; every accepted job must end 'done'
with finite probabilities or 'failed' with a covidct message (never the generic message stored for a
non-`CovidCTError`) that shows no server path; the server must stay up, and its peak memory (VmHWM) stay
within budget.
Default: 2 cases per family (synthetic seeds); `slow`: 20 per family.
"""

from __future__ import annotations

import io
import math
import time
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import pytest
from tests.fuzz.corpus import FAMILY_NAMES, make_case, prepare_seeds
from tests.service.conftest import ServerProcess, make_token

from covidct.service.jobs import internal_error_message

UPLOAD_FAMILIES = ("byteflip", "truncate", "tagedit", "syntax-lie", "series-mix", "partial", "zip", "nifti",
                   "names")
"""Families whose cases are studies one could upload (cohort files, PNG folders, FIFOs are not)."""
DEFAULT_PER_FAMILY = 2
SLOW_PER_FAMILY = 20
SEED = 15
JOB_TIMEOUT_S = 300.0
SERVER_PEAK_BUDGET_KB = 3 * 1024 * 1024
"""Server peak resident memory allowed (model and torch included): 3 GiB."""


def _indices(per_family: int) -> list[int]:
    """Corpus indices of the upload-able families, ``per_family`` of each."""
    out: list[int] = []
    counts: Counter[str] = Counter()
    i = 0
    while len(out) < per_family * len(UPLOAD_FAMILIES):
        family = FAMILY_NAMES[i % len(FAMILY_NAMES)]
        if family in UPLOAD_FAMILIES and counts[family] < per_family:
            out.append(i)
            counts[family] += 1
        i += 1
    return out


def _as_upload(path: Path) -> tuple[str, bytes] | None:
    """(file name, bytes) to upload: a file as it is, a folder zipped; None when it cannot be sent."""
    if path.is_file():
        return path.name, path.read_bytes()
    buf = io.BytesIO()
    try:
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(path.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(path.parent).as_posix())
    except (UnicodeEncodeError, OSError):
        return None  # a name zipfile cannot store, or a dangling link
    return f"{path.name}.zip", buf.getvalue()


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _run(server: ServerProcess, tmp_path: Path, per_family: int) -> None:
    token = make_token(server.db, f"fuzz-{per_family}")
    auth = {"Authorization": f"Bearer {token}"}
    seeds = prepare_seeds(tmp_path / "seeds", None)
    answers: Counter[str] = Counter()
    problems: list[str] = []
    accepted: dict[str, str] = {}
    for i in _indices(per_family):
        case = make_case(seeds, i, SEED, tmp_path / f"case{i}")
        label = f"{case.family}/{case.variant} #{i}"
        upload = _as_upload(case.path)
        if upload is None:
            answers["not sendable"] += 1
            continue
        resp = httpx.post(f"{server.url}/studies", files=[("files", upload)], headers=auth, timeout=120)
        answers[str(resp.status_code)] += 1
        if resp.status_code == 202:
            accepted[resp.json()["id"]] = label
        elif not 400 <= resp.status_code < 500:
            problems.append(f"{label}: HTTP {resp.status_code} {resp.text[:200]}")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    jobs: dict[str, dict] = {}
    while len(jobs) < len(accepted) and time.monotonic() < deadline:
        for job_id in set(accepted) - set(jobs):
            job = httpx.get(f"{server.url}/studies/{job_id}", headers=auth).json()
            if job["status"] in ("done", "failed"):
                jobs[job_id] = job
        time.sleep(0.5)
    for job_id, label in accepted.items():
        job = jobs.get(job_id)
        if job is None:
            problems.append(f"{label}: job not finished in {JOB_TIMEOUT_S} s")
        elif job["status"] == "failed":
            answers["job failed"] += 1
            error = job["error"] or ""
            if error == internal_error_message(job_id) or str(server.data_dir) in error:
                problems.append(f"{label}: job error {error[:200]!r}")
        else:
            answers["job done"] += 1
            probs = job["result"]["probabilities"].values()
            if not all(isinstance(p, float) and math.isfinite(p) for p in probs):
                problems.append(f"{label}: done with probabilities {job['result']['probabilities']}")
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    peak = _peak_kb(server.proc.pid)
    print(f"fuzz uploads x{per_family}/family: {dict(answers)}; server VmHWM {peak / 1024:.0f} MiB")
    assert not problems, "\n".join(problems)
    assert peak < SERVER_PEAK_BUDGET_KB, f"server peak memory {peak / 1024:.0f} MiB"
    refused = sum(v for k, v in answers.items() if k.startswith("4"))
    assert answers["202"] + refused + answers["not sendable"] == per_family * len(UPLOAD_FAMILIES)


def test_fuzz_uploads_default(loopback_server: ServerProcess, tmp_path: Path) -> None:
    _run(loopback_server, tmp_path, DEFAULT_PER_FAMILY)


@pytest.mark.slow
def test_fuzz_uploads_slow(loopback_server: ServerProcess, tmp_path: Path) -> None:
    _run(loopback_server, tmp_path, SLOW_PER_FAMILY)
