"""The DICOM node: a C-ECHO / C-STORE SCP that analyses CT series as they arrive from PACS or a scanner.

Incoming instances are validated and written (fsync'ed) to
``storage_dir/<StudyInstanceUID>/<SeriesInstanceUID>/`` **before** the C-STORE is acknowledged.
A series is complete when no new instance came for ``quiet_seconds`` (a background thread checks);
it is then queued as a job of the node's `JobStore` and analysed by the one job runner
(`covidct.service.jobs.WorkerPool`) with ``analyse(series_dir)``; the result goes to ``on_result``
and, when a destination is configured, a Comprehensive SR and Secondary Capture key images are sent
back by C-STORE, before the job is committed 'done'.

Restart: on `start()` the node reads its storage folder and its job store. Series received but
never queued are queued once their quiet time has passed, queued or interrupted jobs run again, done
series are left alone. The SR's SOP Instance UID is derived from the series and the model version,
so a study analysed twice (killed between sending and committing) is still one SR in the PACS.
Built on pynetdicom (the ``dicom-net`` extra).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from covidct.errors import ConfigError, MaskGeometryError, ServiceError
from covidct.service.jobs import WorkerPool, result_dict
from covidct.service.store import STATUS_DONE, STATUS_FAILED, JobStore, JobView

log = logging.getLogger(__name__)

DEFAULT_AE_TITLE = "COVIDCT"
DEFAULT_PORT = 11112
DEFAULT_HOST = "0.0.0.0"
DEFAULT_QUIET_SECONDS = 5.0
POLL_SECONDS = 0.2
MAX_AE_TITLE_CHARS = 16
MAX_PORT = 65535
MAX_UID_CHARS = 64
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DICOM_PREAMBLE = b"\x00" * 128 + b"DICM"
NETWORK_TIMEOUT_S = 30.0
MAX_ASSOCIATIONS = 8
NODE_DB = "jobs.db"
"""The node's job store in its storage folder, when no store is given."""
SR_UID_TAG = "covidct-sr"

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_CLASS_MASK = 0xF000
WARNING_CLASS = 0xB000

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
ACCEPTED_SOP_CLASSES = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE)
ACCEPTED_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1, JPEGLossless, JPEGBaseline8Bit, JPEGExtended12Bit,
    JPEG2000Lossless, JPEG2000, RLELossless,
)

SERIES_RECEIVING = "receiving"
SERIES_ANALYSING = "analysing"
SERIES_DONE = "done"
SERIES_FAILED = "failed"

Analyse = Callable[[Path], Any]
OnResult = Callable[[str, Any], None]


class InvalidInstanceError(ServiceError):
    """An incoming DICOM instance is truncated, lacks identifiers, or is not CT pixel data."""


@dataclass(frozen=True)
class Destination:
    """Where results go back to: a DICOM peer (PACS) that accepts C-STORE."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, value: Destination | tuple[str, int, str] | None) -> Destination | None:
        if value is None or isinstance(value, Destination):
            return value
        host, port, ae_title = value
        return cls(str(host), int(port), str(ae_title))


@dataclass
class SeriesState:
    """What the node knows about one incoming series (timestamps are `time.time()`)."""

    study_uid: str
    series_uid: str
    directory: Path
    instances: set[str] = field(default_factory=set)
    first_received: float = 0.0
    last_received: float = 0.0
    analysed_instances: int = 0
    status: str = SERIES_RECEIVING
    job_id: str | None = None
    submitted_instances: int = 0
    analysed_at: float | None = None
    sent_at: float | None = None
    sr_sop_instance_uid: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    """The JSON-ready result (images and volumes are not kept)."""

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (without the result object)."""
        return {"study_uid": self.study_uid, "series_uid": self.series_uid, "directory": str(self.directory),
                "instances": len(self.instances), "first_received": self.first_received,
                "last_received": self.last_received, "status": self.status, "analysed_at": self.analysed_at,
                "sent_at": self.sent_at, "sr_sop_instance_uid": self.sr_sop_instance_uid,
                "error": self.error, "job_id": self.job_id}


def validate_ae_title(ae_title: str, what: str = "AE title") -> str:
    """An AE title: 1-16 printable ASCII characters, no backslash."""
    text = str(ae_title).strip()
    if not text or len(text) > MAX_AE_TITLE_CHARS or "\\" in text or not text.isascii() \
            or not text.isprintable():
        raise ConfigError(f"Invalid {what} {ae_title!r}: use 1-{MAX_AE_TITLE_CHARS} printable ASCII "
                          "characters without backslash (e.g. COVIDCT).")
    return text


def validate_port(port: int, what: str = "port") -> int:
    if not 1 <= int(port) <= MAX_PORT:
        raise ConfigError(f"Invalid {what} {port}: use a TCP port between 1 and {MAX_PORT} "
                          f"(DICOM commonly uses 104 or {DEFAULT_PORT}).")
    return int(port)


def require_pynetdicom() -> Any:
    """The pynetdicom module, or a `ServiceError` saying how to install it."""
    try:
        import pynetdicom
    except ImportError:
        raise ServiceError("The DICOM node needs pynetdicom and highdicom: "
                           "pip install 'covidct[dicom-net]'.") from None
    return pynetdicom


def port_error(host: str, port: int, exc: OSError) -> ServiceError:
    """The error for a port that cannot be bound, saying what to do."""
    return ServiceError(f"Cannot listen for DICOM on {host}:{port} ({exc.strerror or exc}). Another program "
                        "(Orthanc, storescp, another covidct dicom-listen) may use this port: choose another "
                        "--port or stop that program.")


def ensure_port_free(host: str, port: int) -> None:
    """Raise `ServiceError` now when ``host:port`` cannot be bound (before loading a model, say)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise port_error(host, port, exc) from None


def _uid(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword) or "").strip()
    if not value:
        raise InvalidInstanceError(f"the instance has no {keyword}")
    if len(value) > MAX_UID_CHARS or not UID_PATTERN.match(value):
        raise InvalidInstanceError(f"{keyword} {value[:80]!r} is not a valid DICOM UID")
    return value


def expected_native_bytes(ds: Dataset) -> int:
    """Bytes of uncompressed pixel data the header announces."""
    frames = int(ds.get("NumberOfFrames") or 1)
    bytes_per_sample = (int(ds.BitsAllocated) + 7) // 8
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * bytes_per_sample * frames


def validate_instance(ds: Dataset, transfer_syntax: Any) -> tuple[str, str, str]:
    """Check an incoming instance; returns (study, series, SOP instance) UIDs.

    Raises `InvalidInstanceError` for missing/unsafe UIDs, missing pixel data and pixel data shorter
    than the header announces (a truncated transfer).
    """
    study, series, sop = (_uid(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if keyword not in ds:
            raise InvalidInstanceError(f"the image has no {keyword}")
    if "PixelData" not in ds:
        raise InvalidInstanceError("the image has no pixel data (truncated transfer?)")
    pixels = ds["PixelData"].value
    if getattr(transfer_syntax, "is_encapsulated", False):
        from pydicom.encaps import generate_fragments

        if not any(len(f) for f in generate_fragments(pixels)):
            raise InvalidInstanceError("the compressed pixel data holds no fragment")
    else:
        expected = expected_native_bytes(ds)
        if len(pixels) < expected:
            raise InvalidInstanceError(f"pixel data has {len(pixels)} bytes but the header announces "
                                       f"{expected} (truncated transfer)")
    return study, series, sop


def write_instance(path: Path, file_meta: Dataset, encoded: bytes) -> None:
    """Write a received instance as a DICOM file, atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as fh:
        fh.write(DICOM_PREAMBLE)
        write_file_meta_info(fh, file_meta, enforce_standard=True)
        fh.write(encoded)
        fh.flush()
        os.fsync(fh.fileno())  # on disk before the C-STORE is acknowledged
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_success(code: int) -> bool:
    """C-STORE success or warning (0x0000, 0xBxxx, 0x0001); failures are 0xAxxx, 0xCxxx, 0x01xx, -1."""
    return code in (STATUS_SUCCESS, 0x0001) or (code >= 0 and code & STATUS_CLASS_MASK == WARNING_CLASS)


def send_datasets(destination: Destination, datasets: list[Dataset], *, calling_ae: str) -> list[int]:
    """C-STORE ``datasets`` to ``destination`` over one association; returns the statuses.

    Raises `ServiceError` when the association fails or the peer answers a failure status.
    """
    if not datasets:
        return []
    ae = require_pynetdicom().AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT_S
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise ServiceError(f"Could not associate with {destination.ae_title}@{destination.host}:"
                           f"{destination.port}; check the destination's host, port and AE title, and that "
                           f"it knows {calling_ae} as a modality.")
    statuses: list[int] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            statuses.append(code)
            if not is_success(code):
                raise ServiceError(f"{destination.ae_title} refused {ds.SOPClassUID.name} instance "
                                   f"{ds.SOPInstanceUID} (status 0x{code & 0xFFFF:04X}).")
    finally:
        assoc.release()
    return statuses


class DicomListener:
    """A C-ECHO / C-STORE SCP that analyses each complete CT series once and can send results back.

    ``analyse(series_dir)`` returns a result (a Predictor `StudyResult` or a dict with predicted_class,
    probabilities, model_name, model_version, optional key_images); ``on_result(series_uid, result)``
    sees it. Jobs live in ``store`` (default: ``storage_dir/jobs.db``) and run on ``workers`` threads.
    `start()` returns at once (the server runs in threads); `stop()` shuts it down.
    """

    def __init__(self, ae_title: str = DEFAULT_AE_TITLE, port: int = DEFAULT_PORT, *,
                 storage_dir: str | Path, analyse: Analyse, quiet_seconds: float = DEFAULT_QUIET_SECONDS,
                 destination: Destination | tuple[str, int, str] | None = None,
                 on_result: OnResult | None = None, host: str = DEFAULT_HOST,
                 poll_seconds: float = POLL_SECONDS, store: JobStore | None = None, workers: int = 1) -> None:
        self.ae_title = validate_ae_title(ae_title)
        self.port = validate_port(port)
        self.host = host
        if quiet_seconds <= 0:
            raise ConfigError(f"quiet_seconds must be > 0, got {quiet_seconds}; a series counts as complete "
                              "after that many seconds without a new instance (e.g. 5).")
        self.quiet_seconds = float(quiet_seconds)
        self.poll_seconds = float(poll_seconds)
        self.storage_dir = Path(storage_dir)
        self.analyse = analyse
        self.on_result = on_result
        self.destination = Destination.parse(destination)
        if self.destination is not None:
            validate_ae_title(self.destination.ae_title, "destination AE title")
            validate_port(self.destination.port, "destination port")
        self.store = store
        self.workers = workers
        self.runner: WorkerPool | None = None
        self._own_store = False
        self.series: dict[str, SeriesState] = {}
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._worker: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------
    def start(self) -> DicomListener:
        """Start the SCP and the series monitor; raises `ServiceError` when the port cannot be used."""
        netdicom = require_pynetdicom()
        evt = netdicom.evt
        try:
            self.storage_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create the storage folder {self.storage_dir}: {exc}; "
                              "choose a writable --storage folder.") from None
        if self.store is None:
            self.store, self._own_store = JobStore(self.storage_dir / NODE_DB), True
        self.runner = WorkerPool(self.store, self.analyse, workers=self.workers,
                                 on_result=self._after_analysis)
        self._recover()
        ae = netdicom.AE(ae_title=self.ae_title)
        ae.network_timeout = NETWORK_TIMEOUT_S
        ae.maximum_associations = MAX_ASSOCIATIONS
        ae.add_supported_context(VERIFICATION)
        for sop_class in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(ACCEPTED_TRANSFER_SYNTAXES))
        handlers = [(evt.EVT_C_ECHO, self._handle_echo), (evt.EVT_C_STORE, self._handle_store)]
        try:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise port_error(self.host, self.port, exc) from None
        self.port = self._server.server_address[1]
        self.runner.start()
        self._stop.clear()
        self._worker = threading.Thread(target=self._monitor, name="covidct-dicom-monitor", daemon=True)
        self._worker.start()
        log.info("DICOM node %s listening on %s:%d", self.ae_title, self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop accepting associations and the monitor (a running analysis finishes first)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        if self._own_store and self.store is not None:
            self.store.close()
            self.store, self._own_store = None, False

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> DicomListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> list[dict[str, Any]]:
        """A snapshot of every series seen since start."""
        with self._lock:
            return [s.snapshot() for s in self.series.values()]

    # ---- DICOM handlers (run in pynetdicom's association threads) -------------
    def _handle_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _handle_store(self, event: Any) -> int:
        peer = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        try:
            ds = event.dataset
            study, series, sop = validate_instance(ds, event.context.transfer_syntax)
        except Exception as exc:  # any decoding problem means the peer sent something unusable
            message = f"rejected an instance from {peer}: {exc}"
            log.warning(message)
            self.rejected.append(message)
            return STATUS_CANNOT_UNDERSTAND
        directory = self.storage_dir / study / series
        try:
            write_instance(directory / f"{sop}.dcm", event.file_meta, event.request.DataSet.getvalue())
        except OSError as exc:
            log.error("cannot store %s from %s: %s", sop, peer, exc)
            return STATUS_OUT_OF_RESOURCES
        self._record(study, series, sop, directory)
        return STATUS_SUCCESS

    def _record(self, study: str, series: str, sop: str, directory: Path) -> None:
        now = time.time()
        with self._lock:
            state = self.series.get(series)
            if state is None:
                state = self.series[series] = SeriesState(study, series, directory, first_received=now)
            if sop not in state.instances:
                state.instances.add(sop)
                state.last_received = now
                if state.status != SERIES_ANALYSING:
                    state.status = SERIES_RECEIVING

    # ---- restart: what is on disk and in the store -------------------------------
    def _recover(self) -> None:
        """Series folders from before a restart: never queued -> waiting for the quiet rule (their
        last file's time counts as the last arrival); queued or interrupted -> the runner picks them
        up; done or failed -> recorded as such."""
        assert self.store is not None
        for directory in sorted(p for p in self.storage_dir.glob("*/*") if p.is_dir()):
            files = sorted(directory.glob("*.dcm"))
            if not files:
                continue
            last = max(f.stat().st_mtime for f in files)
            state = SeriesState(directory.parent.name, directory.name, directory,
                                instances={f.stem for f in files}, first_received=last, last_received=last)
            job = self.store.find_by_series(state.series_uid)
            if job is not None:
                state.job_id, state.submitted_instances = job.id, len(files)
                self._apply_job_status(state, job)
            with self._lock:
                self.series.setdefault(state.series_uid, state)
            log.info("recovered series %s (%d instances, %s)", state.series_uid, len(files), state.status)

    # ---- the quiet-time rule and the job queue ----------------------------------
    def _due(self) -> list[SeriesState]:
        now = time.time()
        with self._lock:
            return [s for s in self.series.values()
                    if s.status == SERIES_RECEIVING and len(s.instances) > s.analysed_instances
                    and now - s.last_received >= self.quiet_seconds]

    def _monitor(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for state in self._due():
                if self._stop.is_set():
                    return
                self._submit(state)
            self._refresh()

    def _submit(self, state: SeriesState) -> None:
        """Queue a complete series (a new job, or its job again when more instances came)."""
        assert self.store is not None and self.runner is not None
        with self._lock:
            state.status = SERIES_ANALYSING
            state.submitted_instances = len(state.instances)
        log.info("series %s complete (%d instances, %.1f s quiet); queued", state.series_uid,
                 state.submitted_instances, self.quiet_seconds)
        job = self.store.find_by_series(state.series_uid)
        if job is None:
            state.job_id = self.runner.submit(state.directory, series_uid=state.series_uid)
        else:
            state.job_id = job.id
            self.runner.resubmit(job.id)

    def _refresh(self) -> None:
        """Copy finished jobs' outcomes onto the series being analysed."""
        assert self.store is not None
        with self._lock:
            waiting = [s for s in self.series.values() if s.status == SERIES_ANALYSING and s.job_id]
        for state in waiting:
            job = self.store.get(str(state.job_id))
            if job is not None:
                self._apply_job_status(state, job)

    def _apply_job_status(self, state: SeriesState, job: JobView) -> None:
        with self._lock:
            if job.status not in (STATUS_DONE, STATUS_FAILED):
                state.status = SERIES_ANALYSING
                return
            state.analysed_instances = state.submitted_instances
            state.error = job.error if job.status == STATUS_FAILED else None
            finished = SERIES_DONE if job.status == STATUS_DONE else SERIES_FAILED
            state.status = SERIES_RECEIVING if len(state.instances) > state.submitted_instances else finished

    def _after_analysis(self, job: JobView, result: Any) -> None:
        """The runner's hook (before the job is committed): record, hand on, send back."""
        series_uid = str(job.series_uid)
        with self._lock:
            state = self.series.get(series_uid)
        if state is None:  # queued by an earlier run of this node and not on disk any more
            raise ServiceError(f"series {series_uid} is not in the node's storage {self.storage_dir}")
        state.result, state.analysed_at = result_dict(result), time.time()  # no volume kept in memory
        if self.on_result is not None:
            self.on_result(series_uid, result)
        if self.destination is not None:
            self._send_back(state, result)

    def _send_back(self, state: SeriesState, result: Any) -> None:
        from pydicom.uid import generate_uid

        from covidct.service.dicom_export import build_key_images, build_structured_report

        if self.destination is None:
            return
        headers = [dcmread(p, stop_before_pixels=True) for p in sorted(state.directory.glob("*.dcm"))]
        version = str(result_dict(result).get("model_version") or "")
        entropy = [SR_UID_TAG, state.series_uid, version]  # the same UIDs each time: one SR in the PACS
        seg = self._segmentation(state, result, headers, entropy)
        sr = build_structured_report(headers, result,
                                     series_uid=generate_uid(entropy_srcs=[*entropy, "series"]),
                                     sop_instance_uid=generate_uid(entropy_srcs=entropy), segmentation=seg)
        send_datasets(self.destination, [*([] if seg is None else [seg]), sr], calling_ae=self.ae_title)
        state.sent_at, state.sr_sop_instance_uid = time.time(), str(sr.SOPInstanceUID)
        key_images = build_key_images(headers, result)
        send_datasets(self.destination, key_images, calling_ae=self.ae_title)
        log.info("sent SR %s and %d key images of series %s to %s", sr.SOPInstanceUID, len(key_images),
                 state.series_uid, self.destination.ae_title)

    @staticmethod
    def _segmentation(state: SeriesState, result: Any, headers: list[Dataset],
                      entropy: list[str]) -> Dataset | None:
        """The study's DICOM SEG (lungs, lesions) with UIDs derived like the SR's, or None (logged) when
        the result has no masks or the series geometry cannot carry one."""
        from pydicom.uid import generate_uid

        from covidct.service.masks import study_segmentation

        try:
            return study_segmentation(result, headers,
                                      series_uid=generate_uid(entropy_srcs=[*entropy, "seg-series"]),
                                      sop_instance_uid=generate_uid(entropy_srcs=[*entropy, "seg"]))
        except (MaskGeometryError, ConfigError) as exc:
            log.warning("no SEG sent with the SR of series %s: %s", state.series_uid, exc)
            return None


def destination_from_options(host: str | None, port: int | None, ae_title: str | None) -> Destination | None:
    """A `Destination` from the CLI's --dest-host/--dest-port/--dest-ae (all three, or none)."""
    given = [v is not None for v in (host, port, ae_title)]
    if not any(given):
        return None
    if not all(given):
        raise ConfigError("Give --dest-host, --dest-port and --dest-ae together (the PACS that receives the "
                          "SR and key images), or none of them.")
    return Destination(str(host), validate_port(int(port), "destination port"),  # type: ignore[arg-type]
                       validate_ae_title(str(ae_title), "destination AE title"))


def run_until_stopped(listener: DicomListener, *, poll_seconds: float = 1.0) -> None:
    """Block until Ctrl-C or SIGTERM, then stop ``listener`` (for the CLI)."""
    import signal

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(poll_seconds):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.stop()


def configure_logging(level: int = logging.INFO) -> None:
    """Log the node's events (received series, rejections, results) to stderr; pynetdicom only warnings."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
