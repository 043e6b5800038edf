"""Keep freed memory in a long-running covidct process, so the next study reuses it.

A study allocates a few hundred MB of large arrays (the HU volume, the model inputs, masks, the
heatmap) and frees them when it is done. glibc hands every block above its mmap threshold (at most
32 MB) straight back to the kernel, so the next study maps fresh pages again. On virtual machines that
return free guest memory to the host (virtio-balloon free page reporting: the CI and benchmark machines
here, and many cloud VMs), touching those pages again costs about 2 ms per MB, ~15 times the cost of
reusing memory the process already holds (`benchmarks/e2e_bench.py`, docs/results.md, issue 21).

`retain_freed_memory()` tells glibc to keep what it frees: no mmap for large blocks (they come from the
heap, which is reused) and no trimming of the heap. The process's resident memory then stays near its
peak instead of rising and falling with each study (P001 with CT-2 S at 512 px: 2.2-2.3 GB between studies
instead of 1.3-1.5 GB). `covidct predict`, `covidct serve`, `covidct dicom-listen` and each
Ray worker call it at start; a library user's own process is left alone. Set
``COVIDCT_RETAIN_MEMORY=0`` to opt out. Other C libraries (non-glibc Linux, macOS, Windows): no effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

ENV_SWITCH = "COVIDCT_RETAIN_MEMORY"
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
"""glibc `mallopt` parameters (malloc.h)."""
NEVER_TRIM = 2**31 - 1
"""Bytes of free heap top glibc may keep before returning it to the kernel: the largest value `mallopt`
takes (an int), 2 GiB."""


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module docstring); True when applied.

    False (nothing changed) when ``COVIDCT_RETAIN_MEMORY=0`` or the C library is not glibc."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    if applied:
        log.info("memory: freed blocks are kept for reuse (glibc mmap off, no trim); %s=0 to opt out",
                 ENV_SWITCH)
    return applied


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has `gnu_get_libc_version` and `mallopt`), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
