"""The REST API (FastAPI): upload studies, poll jobs, fetch slice images, read the worklist.

A thin adapter over `Predictor` + `JobStore` + `WorkerPool`: an upload is checked and stored on
disk, its job row committed, and only then is 202 answered; workers take jobs from the database, so
a killed server finishes every accepted job after a restart (stale 'running' jobs are re-queued).

Order of checks on an upload: the token (headers only; no body byte is read before it), the
declared Content-Length, then the body is parsed as it streams in (chunked or not) straight into
the job folder, and reading stops at the size limit. Every refusal is a `CovidCTError` answered
4xx with ``Connection: close`` so the server reads no more of that body.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from covidct import RESEARCH_USE_STATEMENT, __version__
from covidct.errors import CovidCTError, InputError, ServiceError, UploadError
from covidct.preprocessing.window import WINDOWS
from covidct.service import images
from covidct.service.jobs import (
    HEAT_LEVELS,
    HEATMAP_FILE,
    LESIONS_FILE,
    VOLUME_FILE,
    WorkerPool,
    stored_overlays,
)
from covidct.service.ohif import check_ohif_root, ohif_study_url
from covidct.service.predictor import Predictor
from covidct.service.quantitative import lesion_rgba
from covidct.service.report import render_html, study_links, worklist_row
from covidct.service.security import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    CsrfError,
    SecurityHeaders,
    check_same_origin,
    clear_session_cookie,
    login_token,
    set_session_cookie,
)
from covidct.service.store import STATUS_DONE, JobStore, JobView
from covidct.service.uploads import (
    MB,
    UPLOAD_FIELD,
    MultipartReceiver,
    UnsupportedUploadError,
    UploadLimits,
    UploadTooLargeError,
    study_from_saved,
    too_large_message,
)

log = logging.getLogger("covidct.service")
STATIC_DIR = Path(__file__).with_name("static")
PNG = "image/png"
RAW_HU = "application/octet-stream"
RAW_HU_DTYPE = "<i2"
"""The raw slice route sends little-endian int16 (HU, or 0-255 grey for 8-bit inputs)."""
MAX_TOKEN_CHARS = 512
PATH_KEYS = ("path", "dir", "file")
"""Keys ending in these are left out of `/health` (it shows no server paths)."""
UPLOAD_BODY_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [UPLOAD_FIELD], "properties": {UPLOAD_FIELD: {
        "type": "array", "items": {"type": "string", "format": "binary"},
        "description": "A zip of a DICOM series, a NIfTI file, or DICOM files"}}}}}}}


class NotFoundError(ServiceError):
    """An unknown study id or slice (HTTP 404)."""


class NotReadyError(ServiceError):
    """The study is not analysed yet (HTTP 409)."""


class AuthError(ServiceError):
    """Missing or wrong API token (HTTP 401)."""


@dataclass
class ServiceSettings:
    """Everything `covidct serve` configures."""

    checkpoints: list[str]
    db: str = "covidct.db"
    data_dir: str = "covidct-data"
    workers: int = 1
    ohif_url: str | None = None
    """Root of an OHIF viewer reading the PACS these studies come from: each study's result then carries
    ``ohif_url``, its OHIF link (`covidct.service.ohif`)."""
    max_upload_mb: float = 512.0
    explain: bool = True
    limits: UploadLimits = field(default_factory=UploadLimits)
    device: str = "auto"

    def upload_limits(self) -> UploadLimits:
        return UploadLimits(max_upload_bytes=int(self.max_upload_mb * MB),
                            max_uncompressed_bytes=self.limits.max_uncompressed_bytes,
                            max_members=self.limits.max_members, max_ratio=self.limits.max_ratio)

    def __post_init__(self) -> None:
        if self.ohif_url:  # refused here (ConfigError), before the server starts
            self.ohif_url = check_ohif_root(self.ohif_url)


@dataclass
class ServiceState:
    settings: ServiceSettings
    store: JobStore
    predictor: Predictor
    pool: WorkerPool
    data_dir: Path


def _status_for(exc: CovidCTError) -> int:
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, CsrfError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, NotReadyError):
        return 409
    if isinstance(exc, UploadTooLargeError):
        return 413
    if isinstance(exc, UnsupportedUploadError):
        return 415
    if isinstance(exc, UploadError | ServiceError):
        return 400
    if isinstance(exc, InputError):
        return 422
    return 400


def create_app(settings: ServiceSettings, *, predictor: Predictor | None = None) -> FastAPI:
    """The FastAPI application; models load once when it starts (lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data_dir = Path(settings.data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        store = JobStore(settings.db)
        requeued = store.requeue_stale()
        if requeued:
            log.warning("re-queued %d job(s) left running by a previous server", requeued)
        pred = predictor or Predictor(settings.checkpoints, explain=settings.explain, device=settings.device)
        log.info("models ready (%s); warm-up took %.1f s", pred.model_name, pred.warm_up())
        pool = WorkerPool(store, pred, data_dir, workers=settings.workers)
        app.state.svc = ServiceState(settings, store, pred, pool, data_dir)
        if not store.token_names():
            log.warning("no API tokens: create one with `covidct token create NAME --db %s`", settings.db)
        pool.start()
        try:
            yield
        finally:
            pool.stop()
            store.close()

    # No /docs or /redoc: their pages load scripts from a CDN and run inline script, which the
    # Content-Security-Policy forbids; /openapi.json describes the API.
    app = FastAPI(title="covidct", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"COVID-19 detection in chest CT. {RESEARCH_USE_STATEMENT}")
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_handlers(app)
    _add_routes(app)
    return app


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(CovidCTError)
    async def covidct_error(request: Request, exc: CovidCTError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else {}
        if request.method not in ("GET", "HEAD"):
            # The body may be unread: close, so the server does not drain (read) the rest of it.
            headers["Connection"] = "close"
        return JSONResponse({"detail": str(exc)}, status_code=_status_for(exc), headers=headers)


def state(request: Request) -> ServiceState:
    return request.app.state.svc


_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_token(request: Request, creds: Credentials) -> str:
    """The caller's token name, from the headers alone: the ``Authorization: Bearer`` token (API clients)
    or the browser's HttpOnly session cookie (then state-changing requests must come from this origin).
    401 when both are missing or the token is unknown; 403 for a cross-origin cookie request."""
    by_cookie = not (creds is not None and creds.credentials) and bool(request.cookies.get(SESSION_COOKIE))
    secret = request.cookies[SESSION_COOKIE] if by_cookie else (creds.credentials if creds else "")
    if not secret:
        raise AuthError("Missing API token: send 'Authorization: Bearer <token>' or sign in on the web "
                        "page (create a token with `covidct token create NAME`).")
    store = state(request).store
    if by_cookie:
        name = store.check_session(secret) if len(secret) <= MAX_TOKEN_CHARS else None
        if name is None:
            raise AuthError("Your session has ended (signed out, expired, or its token was revoked); "
                            "sign in again.")
        check_same_origin(request)
        return name
    name = store.check_token(secret) if len(secret) <= MAX_TOKEN_CHARS else None
    if name is None:
        raise AuthError("Unknown API token; check it, or create a new one with `covidct token create NAME`.")
    return name


Auth = Annotated[str, Depends(require_token)]


def _refuse_declared_size(request: Request, limits: UploadLimits) -> None:
    """413 from the Content-Length header alone, before any body byte is read."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_body_bytes:
        raise UploadTooLargeError(too_large_message(limits))


async def _receive_study(request: Request, job_dir: Path, limits: UploadLimits) -> Path:
    """Stream the multipart body into ``job_dir/upload`` (stopping at the limit), then find the study.

    On any refusal ``job_dir`` is removed and the `UploadError` raised (logged with the bytes read).
    """
    receiver: MultipartReceiver | None = None
    try:
        receiver = MultipartReceiver(request.headers.get("content-type"), job_dir / "upload", limits)
        receiver.raw_dir.mkdir(parents=True)
        try:
            async for chunk in request.stream():
                await run_in_threadpool(receiver.feed, chunk)
            saved = receiver.finish()
            return await run_in_threadpool(study_from_saved, saved, job_dir, limits)
        except ClientDisconnect:
            raise UploadError("The client disconnected before the upload was complete; "
                              "send it again.") from None
        except OSError as exc:
            raise UploadError(f"The upload cannot be stored ({exc.strerror or type(exc).__name__}); "
                              "send plain, short file names.") from None
        finally:
            receiver.close()
    except BaseException as exc:
        shutil.rmtree(job_dir, ignore_errors=True)
        log.warning("upload refused after %d body bytes: %s", receiver.body_bytes if receiver else 0,
                    str(exc)[:300] or type(exc).__name__)
        raise


def _without_paths(value: Any) -> Any:
    """``value`` (JSON-like) less every key that names a path, directory or file."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if not str(k).lower().endswith(PATH_KEYS)}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


def _public_job(job: JobView, *, with_result: bool = True) -> dict[str, Any]:
    """A job as the API shows it: no server-side path (the result's ``source`` is the study's own
    name); ``ohif_url`` when `with_ohif_url` set one."""
    d = job.to_dict(with_result=with_result)
    d.pop("source_path", None)
    result = d.get("result")
    if isinstance(result, dict) and result.get("source"):
        d["result"] = {**result, "source": Path(str(result["source"])).name}
    d["ohif_url"] = (job.result or {}).get("ohif_url")
    return d


def with_ohif_url(job: JobView, ohif_root: str | None) -> JobView:
    """``job`` with its OHIF link in its result (``result["ohif_url"]``) when an OHIF root is configured and
    the study has a StudyInstanceUID; computed when answering, so a changed setting applies to old jobs."""
    url = ohif_study_url(ohif_root, job.study_uid) if ohif_root else None
    if url is None:
        return job
    return dataclasses.replace(job, result={**(job.result or {}), "ohif_url": url})


def _job(svc: ServiceState, job_id: str) -> JobView:
    job = svc.store.get(job_id) if len(job_id) <= 64 else None
    if job is None:
        raise NotFoundError(f"No study with id {job_id!r}; POST /studies returns the id to use.")
    return job


def _slice_array(svc: ServiceState, job: JobView, name: str, k: int) -> np.ndarray:
    if job.status != STATUS_DONE:
        raise NotReadyError(f"Study {job.id} is {job.status}; images exist once it is done.")
    path = svc.data_dir / "jobs" / job.id / name
    if not path.is_file():
        what = {HEATMAP_FILE: "explanation heatmap", LESIONS_FILE: "quantitative-CT lesion map"}.get(
            name, "image data")
        raise NotFoundError(f"Study {job.id} has no {what} (explanations or HU input may be unavailable).")
    arr = np.load(path, mmap_mode="r")
    if not 0 <= k < arr.shape[0]:
        raise NotFoundError(f"Slice {k} does not exist; study {job.id} has slices 0..{arr.shape[0] - 1}.")
    return np.asarray(arr[k])


def _add_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health")
    def health(request: Request, creds: Credentials) -> dict[str, Any]:
        """Liveness for anyone; with a valid token also the version, models, queue and workers (no paths)."""
        svc = state(request)
        out: dict[str, Any] = {"status": "ok", "research_use": RESEARCH_USE_STATEMENT}
        if creds is not None and creds.credentials and svc.store.check_token(creds.credentials):
            out.update({"version": __version__, "model": _without_paths(svc.predictor.describe()),
                        "queue": svc.store.counts(), "workers": svc.pool.status()})
        return out

    @app.post("/login")
    async def login(request: Request) -> JSONResponse:
        """Sign the browser in: body ``{"token": "..."}``; the answer sets the HttpOnly session cookie."""
        if request.headers.get("origin"):  # a browser: only this page may sign in
            check_same_origin(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = login_token(body)
        name = state(request).store.check_token(token) if len(token) <= MAX_TOKEN_CHARS else None
        if name is None:
            raise AuthError("Unknown API token; check it, or create a new one with "
                            "`covidct token create NAME`.")
        response = JSONResponse({"signed_in": True, "name": name})
        session_id = await run_in_threadpool(state(request).store.create_session, name, SESSION_MAX_AGE_S)
        set_session_cookie(response, request, session_id)
        return response

    @app.post("/logout")
    def logout(request: Request) -> JSONResponse:
        """Sign the browser out: the session ends on the server (its cookie no longer works, even if
        it was copied) and the cookie is cleared."""
        session_id = request.cookies.get(SESSION_COOKIE, "")
        if session_id and len(session_id) <= MAX_TOKEN_CHARS:
            state(request).store.end_session(session_id)
        response = JSONResponse({"signed_in": False})
        clear_session_cookie(response, request)
        return response

    @app.get("/session")
    def session(_token: Auth) -> dict[str, Any]:
        """Who is signed in (401 when nobody): the token's name."""
        return {"signed_in": True, "name": _token}

    @app.get("/windows")
    def windows(_token: Auth) -> dict[str, Any]:
        """The display window presets (HU): ``{name: {"center": c, "width": w}}``."""
        return {name: {"center": w.center, "width": w.width} for name, w in WINDOWS.items()}

    @app.post("/studies", status_code=202, openapi_extra=UPLOAD_BODY_SCHEMA)
    async def upload_study(request: Request, _token: Auth) -> JSONResponse:
        """Store an upload (multipart field ``files``), commit its job, then answer 202 with the job id.

        The token is checked from the headers before any of the body is read.
        """
        svc = state(request)
        limits = svc.settings.upload_limits()
        _refuse_declared_size(request, limits)
        job_id = uuid.uuid4().hex
        study = await _receive_study(request, svc.data_dir / "jobs" / job_id, limits)
        await run_in_threadpool(svc.store.add_job, study, job_id=job_id)
        svc.pool.notify()
        return JSONResponse({"id": job_id, "status": "queued", "url": f"/studies/{job_id}"},
                            status_code=202, headers={"Location": f"/studies/{job_id}"})

    @app.get("/studies/{job_id}")
    def get_study(request: Request, job_id: str, _token: Auth) -> dict[str, Any]:
        svc = state(request)
        return _public_job(with_ohif_url(_job(svc, job_id), svc.settings.ohif_url))

    @app.get("/studies/{job_id}/slices/{k}.png", response_class=Response)
    def slice_png(request: Request, job_id: str, k: int, _token: Auth,
                  window: Annotated[str, Query(description="lung or mediastinum")] = "lung") -> Response:
        svc = state(request)
        job = _job(svc, job_id)
        values = _slice_array(svc, job, VOLUME_FILE, k)
        is_hu = bool((job.result or {}).get("is_hu", True))
        return Response(images.png_bytes(images.to_grey(values, window=window, is_hu=is_hu)), media_type=PNG)

    @app.get("/studies/{job_id}/hu/{k}", response_class=Response)
    def slice_hu(request: Request, job_id: str, k: int, _token: Auth) -> Response:
        """Slice k's stored values as raw little-endian int16, row-major (HU; 0-255 grey for 8-bit
        inputs); headers ``X-Rows``, ``X-Columns`` and ``X-Is-HU``. The viewer windows them itself."""
        svc = state(request)
        job = _job(svc, job_id)
        values = _slice_array(svc, job, VOLUME_FILE, k)
        is_hu = bool((job.result or {}).get("is_hu", True))
        rows, cols = values.shape
        return Response(np.ascontiguousarray(values, dtype=RAW_HU_DTYPE).tobytes(), media_type=RAW_HU,
                        headers={"X-Rows": str(rows), "X-Columns": str(cols), "X-Is-HU": str(is_hu).lower()})

    @app.get("/studies/{job_id}/report.html", response_class=HTMLResponse)
    def study_report(request: Request, job_id: str, _token: Auth) -> HTMLResponse:
        """The study's HTML report (the same page `covidct triage --out` writes)."""
        svc = state(request)
        job = _job(svc, job_id)
        if job.status != STATUS_DONE or not job.result:
            raise NotReadyError(f"Study {job.id} is {job.status}; its report exists once it is done.")
        overlays = stored_overlays(svc.data_dir / "jobs" / job.id, job.result)
        return HTMLResponse(render_html(job.result, overlays))

    @app.get("/studies/{job_id}/overlay/{k}.png", response_class=Response)
    def overlay_png(request: Request, job_id: str, k: int, _token: Auth) -> Response:
        """The explanation heatmap of slice k as an RGBA layer (alpha grows with the heat)."""
        svc = state(request)
        heat = _slice_array(svc, _job(svc, job_id), HEATMAP_FILE, k).astype(np.float32) / HEAT_LEVELS
        return Response(images.png_bytes(images.heat_rgba(heat)), media_type=PNG)

    @app.get("/studies/{job_id}/lesions/{k}.png", response_class=Response)
    def lesions_png(request: Request, job_id: str, k: int, _token: Auth) -> Response:
        """Quantitative-CT lesions of slice k as an RGBA layer: ground glass yellow, consolidation red."""
        svc = state(request)
        labels = _slice_array(svc, _job(svc, job_id), LESIONS_FILE, k)
        return Response(images.png_bytes(lesion_rgba(labels)), media_type=PNG)

    @app.get("/studies/{job_id}/segmentation.dcm", response_class=FileResponse)
    def segmentation_dcm(request: Request, job_id: str, _token: Auth) -> FileResponse:
        """The quantitative CT's DICOM Segmentation (right/left lung, ground glass, consolidation) of a
        DICOM study, as application/dicom."""
        from covidct.io.masks import SEG_FILE
        from covidct.service.jobs import MASKS_DIR

        svc = state(request)
        job = _job(svc, job_id)
        if job.status != STATUS_DONE:
            raise NotReadyError(f"Study {job.id} is {job.status}; its segmentation exists once it is done.")
        path = svc.data_dir / "jobs" / job.id / MASKS_DIR / SEG_FILE
        if not path.is_file():
            raise NotFoundError(f"Study {job.id} has no DICOM Segmentation (it needs DICOM input in HU; "
                                "the study's warnings say why none was written).")
        return FileResponse(path, media_type="application/dicom", filename=f"{job.id}-segmentation.dcm")

    @app.get("/worklist")
    def worklist(request: Request, _token: Auth, status: str | None = None,
                 predicted_class: Annotated[str | None, Query(alias="class")] = None,
                 sort: Annotated[str, Query(description="covid_probability, abnormal_fraction "
                                            "(or involvement), severity, created_at, updated_at, status")]
                 = "covid_probability", order: str = "desc",
                 limit: Annotated[int, Query(ge=1, le=10000)] = 500) -> dict[str, Any]:
        """Jobs sorted (COVID-19 probability, highest first, by default), filtered by status and class;
        each item has its worklist columns (`report.worklist_row`) and links to the viewer and report."""
        if order not in ("asc", "desc"):
            raise ServiceError(f"order must be 'asc' or 'desc', not {order[:32]!r}.")
        jobs = state(request).store.list_jobs(status=status, predicted_class=predicted_class, sort=sort,
                                              descending=order == "desc", limit=limit)
        jobs = [with_ohif_url(j, state(request).settings.ohif_url) for j in jobs]
        items = [{**_public_job(j, with_result=False), **worklist_row(j), "links": study_links(j.id)}
                 for j in jobs]
        return {"items": items, "count": len(items)}


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API with uvicorn until interrupted. The database is opened first, so a wrong ``--db``
    is a `ServiceError` message, not a failed start-up inside uvicorn."""
    import uvicorn

    if settings.max_upload_mb <= 0:
        raise ServiceError(f"--max-upload-mb must be positive, not {settings.max_upload_mb:g}.")
    JobStore(settings.db).close()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
