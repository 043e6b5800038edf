"""Fuzz corpus (issue 15): hostile inputs through read_volume / read_cohort and through the CLI.

Each case runs in a forked child with RLIMIT_AS and a wall-clock cap (tests/fuzz/harness.py); a case
fails the test when it raises anything but a CovidCTError, hangs, hits the memory cap, dies, uses more
than ~2 GB, or returns an insane volume. The seeds come from ../shared/data when present (LIDC-IDRI,
COVID-CT-MD, JPEG 2000, NIfTI, UCSD slices, COVIDx split lines) and from synthetic phantoms otherwise,
so the test runs on a fresh clone too.

Default run: ``COVIDCT_FUZZ_CASES`` cases (1,000); the ``slow`` run: 10,000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

from .corpus import FAMILY_NAMES, make_case, prepare_seeds
from .harness import GOOD, REPO_ROOT, run_corpus, summarize

DEFAULT_CASES = int(os.environ.get("COVIDCT_FUZZ_CASES", "1000"))
SLOW_CASES = 10_000
CLI_SAMPLE_PER_FAMILY = 2
CLI_TIMEOUT_S = 60
WORKERS = 2


def _shared() -> Path | None:
    return SHARED_DATA if SHARED_DATA.is_dir() else None


def _assert_no_bad_outcomes(n_cases: int, seed: int) -> None:
    outcomes = run_corpus(n_cases, seed=seed, workers=WORKERS, shared=_shared())
    summary = summarize(outcomes)
    assert set(summary["families"]) == set(FAMILY_NAMES)  # type: ignore[arg-type]
    bad = [
        f"{b['family']}/{b['variant']} #{b['index']}: {b['outcome']} {b['error']} {b['message']}"
        for b in summary["bad_cases"]
    ]  # type: ignore[union-attr]
    assert summary["bad"] == 0, f"{summary['bad']} bad outcomes of {n_cases}:\n" + "\n".join(bad[:50])
    assert all(o.outcome in GOOD for o in outcomes)


def test_fuzz_corpus_default() -> None:
    _assert_no_bad_outcomes(DEFAULT_CASES, seed=0)


@pytest.mark.slow
def test_fuzz_corpus_slow() -> None:
    _assert_no_bad_outcomes(SLOW_CASES, seed=0)


def _invoke_cli(case_kind: str, path: Path) -> subprocess.CompletedProcess[str]:
    args = ["inspect", str(path), "--json"] if case_kind == "volume" else ["cohort", str(path)]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-m", "covidct.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env,
        cwd=REPO_ROOT,
        errors="replace",
    )


def _no_nan(token: str) -> None:
    raise ValueError(f"bare {token} in --json output")


def test_cli_on_a_sample_of_cases_never_prints_a_traceback(tmp_path: Path) -> None:
    """`covidct inspect --json` / `covidct cohort` on two cases of every family: exit 0 with valid JSON
    (no bare NaN), or a non-zero exit with one 'error:' message; never a traceback, never a hang."""
    seeds = prepare_seeds(tmp_path / "seeds", _shared())
    n_families = len(FAMILY_NAMES)
    cases = [make_case(seeds, i, 7, tmp_path / f"case{i}") for i in range(CLI_SAMPLE_PER_FAMILY * n_families)]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda c: _invoke_cli(c.kind, c.path), cases))
    for case, result in zip(cases, results, strict=True):
        where = f"{case.family}/{case.variant} ({case.path})"
        assert "Traceback" not in result.stderr + result.stdout, where + "\n" + result.stderr[-2000:]
        if result.returncode == 0:
            if case.kind == "volume":
                summary = json.loads(result.stdout, parse_constant=_no_nan)
                assert summary["num_slices"] >= 1, where
        else:
            assert result.stderr.startswith("error:"), where + "\n" + result.stderr[-2000:]
            assert result.returncode == 2, where  # a CovidCTError, not the 'unexpected error' exit (1)
