"""Hostile uploads against a real `covidct serve` process on 127.0.0.1 (real sockets, real SQLite).

- A chunked "2 GiB" upload without a token is answered 401 while the client has sent one 64 KiB
  chunk, and the server then closes the connection instead of reading (draining) the rest.
- With a token it is stopped at the size limit: the server log states the body bytes it read.
- Nothing is spooled: the server's own TMPDIR stays empty, no job folder is left behind.
- Broken and hostile zips, gzip and multipart bodies are answered 4xx (never 500), the server keeps
  serving, and a result stored before them is unchanged afterwards.
"""

from __future__ import annotations

import io
import re
import select
import socket
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.service.conftest import (
    HOSTILE_MAX_UPLOAD_MB,
    LOOPBACK,
    ServerProcess,
    make_token,
    wait_for,
    zip_bytes,
)

from covidct.service.jobs import internal_error_message, run_job
from covidct.service.predictor import Predictor
from covidct.service.store import JobStore
from covidct.service.uploads import MB

MAX_UPLOAD_MB = HOSTILE_MAX_UPLOAD_MB
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * MB
CHUNK = 64 * 1024
DECLARED_GIB = 2
UNAUTHENTICATED_READ_BOUND = MB
"""The issue's bound: refused before 1 MB of the body is read."""
SERVER_READ_SLACK = 512 * 1024
"""Bytes the server may read past the limit: one receive of the ASGI server."""
SEND_CAP_BYTES = 64 * MB
"""The test never sends more than this (not 2 GiB); a server still reading by then fails it."""
RESPONSE_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 120.0
BOUNDARY = "covidcthostileboundary"
FAKE_DICOM = b"\0" * 128 + b"DICM" + bytes(range(256)) * 8
REFUSAL_LOG = re.compile(r"upload refused after (\d+) body bytes")
PY_EXCEPTION_TEXT = re.compile(r"\b\w+(Error|Exception)\b:|Traceback")


# ---- a raw HTTP/1.1 client that streams a chunked body until the server answers or closes --------
@dataclass
class StreamOutcome:
    status: int | None
    body: bytes
    sent_before_response: int
    """Body bytes the client had sent when the response arrived (an upper bound of what was read)."""
    sent_total: int
    closed_by_server: bool
    """The server closed the connection (EOF or reset) instead of draining the rest of the body."""


def _frame(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _read_response(sock: socket.socket, timeout: float) -> tuple[int | None, bytes]:
    """Status and body of one HTTP response (Content-Length framed); (None, b"") when reset first."""
    sock.settimeout(timeout)
    buf = body = b""
    try:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
        length = int(match.group(1)) if match else 0
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
    except (ConnectionResetError, TimeoutError):
        pass
    status = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return (int(status.group(1)) if status else None), body


def _server_closed(sock: socket.socket, cap: int) -> tuple[bool, int]:
    """Keep sending body chunks without waiting; True once the server has closed the connection."""
    sent = 0
    sock.setblocking(True)
    sock.settimeout(RESPONSE_TIMEOUT_S)
    try:
        while sent < cap:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and sock.recv(65536) == b"":
                return True, sent
            sock.sendall(_frame(b"\0" * CHUNK))
            sent += CHUNK
    except (BrokenPipeError, ConnectionResetError):
        return True, sent
    except TimeoutError:
        return False, sent
    return False, sent


def stream_chunked_upload(port: int, headers: dict[str, str], *, wait_per_chunk_s: float,
                          give_up_after: int = SEND_CAP_BYTES) -> StreamOutcome:
    """POST /studies a multipart body declared as a 2 GiB file, chunked, 64 KiB at a time.

    After each chunk it waits up to ``wait_per_chunk_s`` for an answer; it stops sending at the answer
    (then checks the server closes) or after ``give_up_after`` body bytes without one (status None).
    """
    sock = socket.create_connection((LOOPBACK, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    lines = ["POST /studies HTTP/1.1", f"Host: {LOOPBACK}:{port}", "Transfer-Encoding: chunked",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
             *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    part_head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; "
                 f"filename=\"{DECLARED_GIB}GiB.zip\"\r\nContent-Type: application/zip\r\n\r\n").encode()
    first = part_head + b"PK\x03\x04" + b"\0" * (CHUNK - len(part_head) - 4)
    sent = 0
    status, body = None, b""
    try:
        while sent < give_up_after:
            try:
                sock.sendall(_frame(first if sent == 0 else b"\0" * CHUNK))
            except (BrokenPipeError, ConnectionResetError):
                status, body = _read_response(sock, 1.0)
                break
            sent += CHUNK
            readable, _, _ = select.select([sock], [], [], wait_per_chunk_s)
            if readable:
                status, body = _read_response(sock, RESPONSE_TIMEOUT_S)
                break
        if status is None and sent >= give_up_after:
            return StreamOutcome(None, b"", sent, sent, closed_by_server=False)
        closed, more = _server_closed(sock, SEND_CAP_BYTES)
        return StreamOutcome(status, body, sent, sent + more, closed)
    finally:
        sock.close()


# ---- the server under attack -----------------------------------------------------------------------
@dataclass
class Target:
    server: ServerProcess
    token: str
    tmpdir: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def job_dirs(self) -> set[str]:
        jobs = self.server.data_dir / "jobs"
        return {p.name for p in jobs.iterdir()} if jobs.is_dir() else set()

    def spooled(self) -> list[str]:
        """Files in the server's TMPDIR, and files it holds open there (deleted temporaries too)."""
        found = [str(p) for p in self.tmpdir.rglob("*")]
        fd_dir = Path(f"/proc/{self.server.proc.pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.is_dir() else []:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target.startswith(str(self.tmpdir)) or "(deleted)" in target:
                found.append(target)
        return found

    def refusal_reads(self) -> list[int]:
        """Body bytes read per refused upload, from the server's log."""
        return [int(n) for n in REFUSAL_LOG.findall(self.server.log.read_text())]


@pytest.fixture(scope="module")
def target(loopback_server: ServerProcess) -> Target:
    return Target(loopback_server, make_token(loopback_server.db, "hostile"),
                  Path(loopback_server.env["TMPDIR"]))


def test_chunked_upload_without_token_is_refused_before_the_body(target: Target) -> None:
    before = target.job_dirs()
    out = stream_chunked_upload(target.server.port, {}, wait_per_chunk_s=1.0,
                                  give_up_after=UNAUTHENTICATED_READ_BOUND)
    assert out.status == 401, out
    assert b"Missing API token" in out.body
    assert out.sent_before_response == CHUNK < UNAUTHENTICATED_READ_BOUND, out
    assert out.closed_by_server, f"the server kept reading the body after its 401: {out}"
    assert target.spooled() == [] and target.job_dirs() == before
    wrong = stream_chunked_upload(target.server.port, {"Authorization": "Bearer nope"},
                                  wait_per_chunk_s=1.0,
                                  give_up_after=UNAUTHENTICATED_READ_BOUND)
    assert wrong.status == 401 and wrong.sent_before_response == CHUNK and wrong.closed_by_server, wrong
    assert httpx.get(f"{target.server.url}/health").json()["status"] == "ok"


def test_chunked_upload_with_token_is_stopped_at_the_limit(target: Target) -> None:
    before = target.job_dirs()
    reads_before = len(target.refusal_reads())
    out = stream_chunked_upload(target.server.port, target.auth, wait_per_chunk_s=0.002)
    assert out.status == 413, out
    assert f"{MAX_UPLOAD_MB} MB limit" in out.body.decode()
    assert out.closed_by_server, f"the server kept reading the body after its 413: {out}"
    assert wait_for(lambda: len(target.refusal_reads()) > reads_before, 10)
    read = target.refusal_reads()[reads_before]
    assert MAX_UPLOAD_BYTES < read <= MAX_UPLOAD_BYTES + SERVER_READ_SLACK, read
    assert out.sent_before_response < SEND_CAP_BYTES
    assert target.spooled() == [] and target.job_dirs() == before, "a refused upload left files"


def test_declared_oversize_is_refused_from_the_headers(target: Target) -> None:
    for headers, code in (({}, 401), (target.auth, 413)):
        with socket.create_connection((LOOPBACK, target.server.port)) as sock:
            head = ["POST /studies HTTP/1.1", f"Host: {LOOPBACK}", f"Content-Length: {DECLARED_GIB << 30}",
                    f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
                    *(f"{k}: {v}" for k, v in headers.items())]
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            status, _ = _read_response(sock, RESPONSE_TIMEOUT_S)
        assert status == code


# ---- broken and hostile bodies -------------------------------------------------------------------
def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _patch_headers(data: bytes, *, local_offset: int, central_offset: int, value: int) -> bytes:
    """Set a 2-byte field of every local (PK\\3\\4) and central (PK\\1\\2) header of a zip."""
    out = bytearray(data)
    for sig, off in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        for m in re.finditer(re.escape(sig), data):
            out[m.start() + off:m.start() + off + 2] = value.to_bytes(2, "little")
    return bytes(out)


def _corrupt_deflate(data: bytes) -> bytes:
    out = bytearray(data)
    name_len = int.from_bytes(data[26:28], "little")
    start = 30 + name_len + int.from_bytes(data[28:30], "little")
    for i in range(start + 2, start + 40):
        out[i] ^= 0xFF
    return bytes(out)


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("s/link.dcm")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _lying_size_zip() -> bytes:
    """A zip whose central directory claims a 3 GB member."""
    data = _zip({"s/a.dcm": FAKE_DICOM})
    out = bytearray(data)
    central = data.find(b"PK\x01\x02")
    out[central + 24:central + 28] = (3 * 10**9).to_bytes(4, "little")
    return bytes(out)


DICOM_ZIP = _zip({"s/a.dcm": FAKE_DICOM * 4})
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def _part(name: str, filename: str | bytes, data: bytes) -> bytes:
    raw_name = filename if isinstance(filename, bytes) else filename.encode()
    head = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"".encode()
    return head + raw_name + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"


CLOSE = f"--{BOUNDARY}--\r\n".encode()


HOSTILE_FILES: dict[str, tuple[str, bytes, int, str]] = {
    # what: (file name, content, status, text in the answer)
    "truncated zip": ("s.zip", DICOM_ZIP[: len(DICOM_ZIP) // 2], 400, "not a readable zip"),
    "corrupt deflate data": ("s.zip", _corrupt_deflate(DICOM_ZIP), 400, "cannot be extracted"),
    "unknown compression method": ("s.zip", _patch_headers(DICOM_ZIP, local_offset=8, central_offset=10,
                                                          value=99), 400, "cannot be extracted"),
    "encrypted member": ("s.zip", _patch_headers(DICOM_ZIP, local_offset=6, central_offset=8, value=1),
                         400, "cannot be extracted"),
    "file and folder of one name": ("s.zip", _zip({"a": FAKE_DICOM, "a/b.dcm": FAKE_DICOM}), 400,
                                    "cannot be extracted"),
    "300-character name": ("s.zip", _zip({"x" * 300 + ".dcm": FAKE_DICOM}), 400, "cannot be extracted"),
    "member named '.'": ("s.zip", _zip({".": FAKE_DICOM}), 400, "no file name"),
    "zip-slip": ("s.zip", _zip({"../../evil.dcm": FAKE_DICOM}), 400, "zip-slip"),
    "symlink member": ("s.zip", _symlink_zip(), 400, "symbolic link"),
    "zip bomb (ratio)": ("s.zip", _zip({"z.dcm": FAKE_DICOM + b"\0" * (20 * MB)}), 400, "zip-bomb"),
    "member claiming 3 GB": ("s.zip", _lying_size_zip(), 400, "zip-bomb"),
    "empty zip": ("s.zip", _zip({}), 400, "The zip is empty"),
    "gzip junk named .nii.gz": ("ct.nii.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 4000, 400, "not DICOM"),
    "text file": ("notes.txt", "naïve ✓ text".encode(), 400, "not DICOM"),
}

HOSTILE_BODIES: dict[str, tuple[str, bytes, int, str]] = {
    # what: (content type, raw body, status, text in the answer)
    "raw zip body": ("application/zip", DICOM_ZIP, 415, "multipart/form-data"),
    "multipart without boundary": ("multipart/form-data", _part("files", "a.zip", DICOM_ZIP), 415,
                                   "boundary"),
    "garbage instead of parts": (MULTIPART, b"\x00\xff" * 5000, 400, "well-formed multipart"),
    "no closing boundary": (MULTIPART, _part("files", "a.dcm", FAKE_DICOM), 400, "closing multipart"),
    "huge part header": (MULTIPART, f"--{BOUNDARY}\r\nX-Junk: {'a' * 20000}\r\n\r\n".encode(), 400,
                         "header"),
    "no file field": (MULTIPART, _part("other", "a.dcm", FAKE_DICOM) + CLOSE, 400, "No file was uploaded"),
    "5001 files": (MULTIPART, b"".join(_part("files", f"{i}.dcm", b"") for i in range(5001)) + CLOSE, 400,
                   "more than 5000 files"),
    "non-UTF-8 file name": (MULTIPART, _part("files", b"\xff\xfe\x00/../x.zip", b"junk") + CLOSE, 400,
                            "not a readable zip"),
}


def _wait_job(target: Target, job_id: str) -> dict:
    url = f"{target.server.url}/studies/{job_id}"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = httpx.get(url, headers=target.auth).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")


def _upload(target: Target, files: list, **kw: object) -> httpx.Response:
    return httpx.post(f"{target.server.url}/studies", files=files, headers=target.auth, timeout=60, **kw)


def test_hostile_uploads_answer_4xx_and_the_server_keeps_serving(
        target: Target, study_factory: Callable[[int], Path]) -> None:
    good = _upload(target, [("files", ("study.zip", zip_bytes(study_factory(0)), "application/zip"))])
    assert good.status_code == 202, good.text
    stored = _wait_job(target, good.json()["id"])
    assert stored["status"] == "done", stored
    jobs_before = target.job_dirs()

    answers: dict[str, tuple[int, str]] = {}
    for what, (name, data, _code, _text) in HOSTILE_FILES.items():
        resp = _upload(target, [("files", (name, data, "application/octet-stream"))])
        answers[what] = (resp.status_code, resp.json().get("detail", ""))
    for what, (ctype, body, _code, _text) in HOSTILE_BODIES.items():
        resp = httpx.post(f"{target.server.url}/studies", content=body, timeout=60,
                          headers={**target.auth, "Content-Type": ctype})
        answers[what] = (resp.status_code, resp.json().get("detail", ""))

    expected = {w: (c, t) for w, (_n, _d, c, t) in {**HOSTILE_FILES, **HOSTILE_BODIES}.items()}
    wrong = {w: got for w, got in answers.items() if got[0] != expected[w][0] or expected[w][1] not in got[1]}
    assert not wrong, wrong
    assert "Traceback" not in target.server.log.read_text()
    assert target.job_dirs() == jobs_before, "refused uploads left job folders"
    assert target.spooled() == []

    assert httpx.get(f"{target.server.url}/health").json()["status"] == "ok"
    again = _upload(target, [("files", ("study.zip", zip_bytes(study_factory(1)), "application/zip"))])
    assert again.status_code == 202 and _wait_job(target, again.json()["id"])["status"] == "done"
    assert httpx.get(f"{target.server.url}/studies/{stored['id']}", headers=target.auth).json() == stored


def _reader_message(folder: Path, name: str, data: bytes) -> str:
    """What the covidct reader says about ``data`` as ``upload/name``, paths relative to ``folder``."""
    from covidct.errors import CovidCTError
    from covidct.io import read_volume

    (folder / "upload").mkdir(parents=True)
    (folder / "upload" / name).write_bytes(data)
    with pytest.raises(CovidCTError) as info:
        read_volume(folder / "upload")
    return str(info.value).replace(f"{folder}/", "")


def test_accepted_but_unreadable_study_fails_with_the_covidct_message(target: Target, tmp_path: Path) -> None:
    resp = _upload(target, [("files", ("IM0001.dcm", FAKE_DICOM, "application/dicom"))])
    assert resp.status_code == 202, resp.text
    job = _wait_job(target, resp.json()["id"])
    assert job["status"] == "failed"
    assert job["error"] == _reader_message(tmp_path, "IM0001.dcm", FAKE_DICOM)
    assert "IM0001.dcm" in job["error"], job["error"]
    assert str(target.server.data_dir) not in job["error"], "the error shows a server path"
    assert "source_path" not in job
    assert not PY_EXCEPTION_TEXT.search(job["error"]), job["error"]


def test_health_shows_no_paths(target: Target) -> None:
    anonymous = httpx.get(f"{target.server.url}/health").json()
    assert set(anonymous) == {"status", "research_use"}
    full = httpx.get(f"{target.server.url}/health", headers=target.auth).json()
    assert full["model"]["models"] and "queue" in full
    text = str(full)
    assert "path" not in text and str(target.server.checkpoint) not in text and ".ckpt" not in text


class _OutOfMemoryPredictor(Predictor):
    """A real Predictor whose analysis runs out of memory (fault injection)."""

    def predict(self, *args: object, **kwargs: object):  # type: ignore[override]
        raise MemoryError("Unable to allocate 32.0 GiB for an array with shape (65535, 65535, 4)")


def test_unexpected_job_error_stores_a_generic_message(tmp_path: Path, tiny_checkpoint: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job_id = store.add_job(tmp_path / "study")
    assert not run_job(store, _OutOfMemoryPredictor([tiny_checkpoint]), store.claim_next())
    failed = store.get(job_id)
    store.close()
    assert failed.status == "failed" and failed.error == internal_error_message(job_id)
    assert "MemoryError" not in failed.error and "GiB" not in failed.error
