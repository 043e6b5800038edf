"""Resource budgets and input guards shared by every reader.

A reader checks what an input *declares* (DICOM Rows x Columns x slices, NIfTI dims, image size, zip
member sizes, inflated size of a deflated DICOM) against `ReadLimits` *before* it allocates or writes
anything, so that a small hostile file cannot make the process use gigabytes.

Budgets (defaults, and the environment variable that raises each one; values take an optional
K/M/G suffix, binary units, e.g. ``COVIDCT_MAX_VOLUME_BYTES=4G``):

| budget | default | variable |
|---|---|---|
| decoded volume (float32 voxels x 4 bytes) | 1 GiB (1024 slices of 512x512) | ``COVIDCT_MAX_VOLUME_BYTES`` |
| bytes one zip may expand to on disk | 4 GiB | ``COVIDCT_MAX_ARCHIVE_BYTES`` |
| zip expansion ratio (all members / archive size) | 100 | ``COVIDCT_MAX_ZIP_RATIO`` |
| members in one zip | 20,000 | ``COVIDCT_MAX_ZIP_MEMBERS`` |
| inflated size of one deflated DICOM file | 256 MiB | ``COVIDCT_MAX_INFLATED_BYTES`` |
| inflate ratio of one deflated DICOM file | 200 | ``COVIDCT_MAX_INFLATE_RATIO`` |

`read_volume(path, limits=ReadLimits(...))` overrides them per call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from covidct.errors import ConfigError, CorruptFileError, CovidCTError, ResourceLimitError, SpecialFileError

KIB = 1024
MIB = 1024**2
GIB = 1024**3
FLOAT32_BYTES = 4
MAX_BAD_SLICE_FRACTION = 0.05
"""A series (DICOM or image slices) with more than this fraction of unreadable slices is refused;
fewer are skipped with a warning naming each file."""
ENV_PREFIX = "COVIDCT_"
GATHERED_LOGGERS = ("pydicom", "nibabel", "nibabel.global", "PIL")
"""Loggers of the reading libraries whose WARNING records go to ``meta.warnings`` during a read."""
_UNITS = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024**4}


@dataclass(frozen=True)
class ReadLimits:
    """Budgets every reader checks before allocating (see the module docstring for the defaults)."""

    max_volume_bytes: int = GIB
    """Decoded volume size: voxels x 4 bytes (float32)."""
    max_archive_bytes: int = 4 * GIB
    """Total uncompressed size of the members of one zip."""
    max_zip_ratio: float = 100.0
    """Total uncompressed size / archive file size."""
    max_zip_members: int = 20_000
    max_inflated_bytes: int = 256 * MIB
    """Inflated size of one deflated-transfer-syntax DICOM file."""
    max_inflate_ratio: float = 200.0
    """Inflated size / compressed size of one deflated DICOM file."""

    @property
    def max_voxels(self) -> int:
        return self.max_volume_bytes // FLOAT32_BYTES

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ReadLimits:
        """Defaults, overridden by ``COVIDCT_<FIELD NAME IN CAPITALS>`` environment variables."""
        env = os.environ if environ is None else environ
        changes: dict[str, float | int] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name in env:
                value = parse_size(env[name], name)
                changes[f.name] = value if "ratio" in f.name else int(value)
        return replace(cls(), **changes)  # type: ignore[arg-type]


def parse_size(text: str, what: str) -> float:
    """'4G' -> 4 * 2**30; '1.5M', '100', '512K' (binary units). Raises ConfigError when unreadable."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", text.upper())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"{what} is {text!r}; expected a positive number with an optional K/M/G/T suffix (e.g. 4G)."
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_bytes(n: float) -> str:
    """Size for messages that never rounds a limit into something else: '8 GiB (8,589,934,592 bytes)',
    '1.00 GiB (1,074,790,400 bytes)', '312 B' (exact bytes always shown from 1 KiB on)."""
    for unit, size in (("TiB", 1024**4), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            value = n / size
            short = f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
            return f"{short} ({int(n):,} bytes)"
    return f"{int(n)} B"


def check_volume_budget(shape: tuple[int, ...], limits: ReadLimits, where: str) -> None:
    """Raise ResourceLimitError when a volume of ``shape`` (float32) exceeds the decoded-byte budget."""
    voxels = 1
    for s in shape:
        voxels *= max(int(s), 0)
    needed = voxels * FLOAT32_BYTES
    if needed > limits.max_volume_bytes:
        dims = " x ".join(str(int(s)) for s in shape)
        raise ResourceLimitError(
            f"{where} declares {dims} voxels, which needs {format_bytes(needed)} as float32; the limit is "
            f"{format_bytes(limits.max_volume_bytes)}. If the data is genuine, raise it with "
            "COVIDCT_MAX_VOLUME_BYTES (e.g. 4G) or "
            "read_volume(..., limits=ReadLimits(max_volume_bytes=...))."
        )


def check_not_special(path: Path) -> None:
    """Refuse FIFOs, devices and sockets without opening them (open() on a FIFO blocks forever)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing / broken links are reported by the caller
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
        )
        raise SpecialFileError(
            f"{path} is {kind}, not a regular file or folder; covidct does not open it. "
            "Give a DICOM folder/zip/file, a NIfTI file, PNG/JPG slices or a cohort file."
        )


def is_regular_file(path: Path) -> bool:
    """True for a regular file (links followed); False for folders, FIFOs, devices, sockets, broken links."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")  # read in gathered_warnings


class _Gatherer:
    """Process-wide capture shared by concurrent reads (the service reads in several threads).

    ``warnings.catch_warnings`` and logger handlers are process-global: two reads entering and leaving
    in an interleaved order would restore each other's state and leave warnings captured forever. So
    the first read installs the capture and the last one to leave restores it; each read takes the
    messages recorded while it ran (under concurrency a message may land in the other read's volume).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.context: Any = None
        self.caught: list[warnings.WarningMessage] = []
        self.handler = _ListHandler()
        self.saved: list[tuple[logging.Logger, bool, list[logging.Handler]]] = []

    def enter(self) -> tuple[int, int]:
        with self.lock:
            if self.depth == 0:
                self.context = warnings.catch_warnings(record=True)
                self.caught = self.context.__enter__()
                warnings.simplefilter("always")
                self.handler.messages = []
                self.saved = []
                for name in GATHERED_LOGGERS:
                    lg = logging.getLogger(name)
                    self.saved.append((lg, lg.propagate, lg.handlers[:]))
                    lg.propagate, lg.handlers = False, [self.handler]
            self.depth += 1
            return len(self.caught), len(self.handler.messages)

    def leave(self, start: tuple[int, int]) -> tuple[list[warnings.WarningMessage], list[str]]:
        with self.lock:
            caught, logged = self.caught[start[0] :], self.handler.messages[start[1] :]
            self.depth -= 1
            if self.depth == 0:
                self.context.__exit__(None, None, None)
                for lg, propagate, handlers in self.saved:
                    lg.propagate, lg.handlers = propagate, handlers
            return caught, logged


_GATHERER = _Gatherer()


@contextlib.contextmanager
def gathered_warnings(sink: list[str]) -> Iterator[None]:
    """Collect warnings raised inside the block (pydicom conformance, nibabel, PIL) and WARNING log
    records of the reading libraries (`GATHERED_LOGGERS`) into ``sink``, each distinct message once with
    its count, instead of printing them to stderr. Safe to use from several threads (see `_Gatherer`)."""
    start = _GATHERER.enter()
    try:
        yield
    finally:
        caught, logged = _GATHERER.leave(start)
    texts = {str(w.message) for w in caught}
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    messages += [m for m in logged if m.split(": ", 1)[-1] not in texts]  # pydicom both warns and logs
    for message, n in Counter(messages).items():
        sink.append(f"{message} ({n} times)" if n > 1 else message)


def bad_slice_warnings(
    n_total: int, failed: dict[str, str], errors: list[CovidCTError], what: str
) -> list[str]:
    """Warnings naming each skipped slice; refuse when more than `MAX_BAD_SLICE_FRACTION` failed.

    Args:
        n_total: slices in the series, readable or not. failed: name -> error message of each
            unreadable slice. errors: the errors themselves (the first one's type is kept). what: e.g.
            'DICOM files', used in the message.

    Raises:
        the first slice's error type, with the count and its message, when too many slices failed.
    """
    if not failed:
        return []
    n_bad = len(failed)
    if n_bad > MAX_BAD_SLICE_FRACTION * n_total or n_bad >= n_total:
        first = next(iter(failed.values()))
        error_type = type(errors[0]) if errors else CorruptFileError
        raise error_type(
            f"{n_bad} of {n_total} {what} cannot be read (more than {MAX_BAD_SLICE_FRACTION:.0%} allowed); "
            f"refusing the series. First: {first}"
        )
    return [f"skipped unreadable slice {name}: {message}" for name, message in failed.items()]
