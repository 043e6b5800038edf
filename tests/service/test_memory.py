"""`covidct.service.memory.retain_freed_memory`: a long-running process keeps what it frees (issue 21).

Each check runs in its own Python process (the setting is process-wide): allocate and touch a 256 MB
array, free it, and see how much of it left the process's resident memory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from covidct.service.memory import _glibc

ARRAY_MB = 256
PROBE = f"""
import sys
import numpy as np
from covidct.service.memory import retain_freed_memory

applied = retain_freed_memory() if sys.argv[1] == "retain" else False

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

block = np.ones({ARRAY_MB} * 2**20, np.uint8)
peak = rss_mb()
del block
print(applied, round(peak - rss_mb()))
"""

pytestmark = pytest.mark.skipif(_glibc() is None or not os.path.exists("/proc/self/statm"),
                                reason="needs Linux with glibc (the setting is glibc's mallopt)")


def released_mb(mode: str, **env: str) -> tuple[bool, int]:
    """(applied, MB of the freed array that left resident memory) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1])


def test_a_freed_array_stays_in_the_process_for_the_next_study() -> None:
    applied, released = released_mb("retain")
    assert applied
    assert released < ARRAY_MB // 10  # kept for reuse


def test_without_it_glibc_returns_a_large_freed_array_at_once() -> None:
    """The baseline the setting changes (so the test above can fail)."""
    applied, released = released_mb("default")
    assert not applied
    assert released > ARRAY_MB * 9 // 10


def test_the_environment_switch_opts_out() -> None:
    applied, released = released_mb("retain", COVIDCT_RETAIN_MEMORY="0")
    assert not applied
    assert released > ARRAY_MB * 9 // 10
