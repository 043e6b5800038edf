"""The REST API (FastAPI): upload studies, poll jobs, fetch slice images, read the worklist.

A thin adapter over `Predictor` + `JobStore` + `WorkerPool`: an upload is checked and stored on
disk, its job row committed, and only then is 202 answered; workers take jobs from the database, so
a killed server finishes every accepted job after a restart (stale 'running' jobs are re-queued).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from covidct import RESEARCH_USE_STATEMENT, __version__
from covidct.errors import CovidCTError, InputError, ServiceError, UploadError
from covidct.service import images
from covidct.service.jobs import HEAT_LEVELS, HEATMAP_FILE, VOLUME_FILE, WorkerPool
from covidct.service.predictor import Predictor
from covidct.service.store import STATUS_DONE, JobStore, JobView
from covidct.service.uploads import MB, UploadLimits, UploadTooLargeError, store_upload

log = logging.getLogger("covidct.service")
STATIC_DIR = Path(__file__).with_name("static")
MULTIPART_OVERHEAD_BYTES = 64 * 1024
PNG = "image/png"


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
    max_upload_mb: float = 512.0
    explain: bool = True
    limits: UploadLimits = field(default_factory=UploadLimits)

    def upload_limits(self) -> UploadLimits:
        return UploadLimits(max_upload_bytes=int(self.max_upload_mb * MB),
                            max_uncompressed_bytes=self.limits.max_uncompressed_bytes,
                            max_members=self.limits.max_members, max_ratio=self.limits.max_ratio)


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
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, NotReadyError):
        return 409
    if isinstance(exc, UploadTooLargeError):
        return 413
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
        pred = predictor or Predictor(settings.checkpoints, explain=settings.explain)
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

    app = FastAPI(title="covidct", version=__version__, lifespan=lifespan,
                  description=f"COVID-19 detection in chest CT. {RESEARCH_USE_STATEMENT}")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_handlers(app, settings)
    _add_routes(app)
    return app


def _add_handlers(app: FastAPI, settings: ServiceSettings) -> None:
    @app.exception_handler(CovidCTError)
    async def covidct_error(_request: Request, exc: CovidCTError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
        return JSONResponse({"detail": str(exc)}, status_code=_status_for(exc), headers=headers)

    limit = int(settings.max_upload_mb * MB) + MULTIPART_OVERHEAD_BYTES

    @app.middleware("http")
    async def refuse_large_uploads(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > limit:
            return JSONResponse({"detail": f"The upload is {int(length) / MB:.1f} MB; the limit is "
                                 f"{settings.max_upload_mb:g} MB. Send a smaller study or raise "
                                 "--max-upload-mb."}, status_code=413)
        return await call_next(request)


def state(request: Request) -> ServiceState:
    return request.app.state.svc


_bearer = HTTPBearer(auto_error=False)


def require_token(request: Request,
                  creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The calling token's name; 401 when the Bearer token is missing or unknown."""
    if creds is None or not creds.credentials:
        raise AuthError("Missing API token: send 'Authorization: Bearer <token>' "
                        "(create one with `covidct token create NAME`).")
    name = state(request).store.check_token(creds.credentials)
    if name is None:
        raise AuthError("Unknown API token; check it, or create a new one with `covidct token create NAME`.")
    return name


Auth = Annotated[str, Depends(require_token)]


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
        what = "explanation heatmap" if name == HEATMAP_FILE else "image data"
        raise NotFoundError(f"Study {job.id} has no {what} (explanations may be unavailable).")
    arr = np.load(path, mmap_mode="r")
    if not 0 <= k < arr.shape[0]:
        raise NotFoundError(f"Slice {k} does not exist; study {job.id} has slices 0..{arr.shape[0] - 1}.")
    return np.asarray(arr[k])


def _add_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health")
    def health(request: Request) -> dict[str, Any]:
        svc = state(request)
        return {"status": "ok", "version": __version__, "model": svc.predictor.describe(),
                "queue": svc.store.counts(), "workers": svc.pool.status(),
                "research_use": RESEARCH_USE_STATEMENT}

    @app.post("/studies", status_code=202)
    def upload_study(request: Request, _token: Auth,
                     files: Annotated[list[UploadFile], File(description="A zip of a DICOM series, a NIfTI "
                                                             "file, or DICOM files")]) -> JSONResponse:
        """Store an upload, commit its job, then answer 202 with the job id."""
        import uuid

        svc = state(request)
        job_id = uuid.uuid4().hex
        job_dir = svc.data_dir / "jobs" / job_id
        study = store_upload([(f.filename, f.file) for f in files], job_dir, svc.settings.upload_limits())
        svc.store.add_job(study, job_id=job_id)
        svc.pool.notify()
        return JSONResponse({"id": job_id, "status": "queued", "url": f"/studies/{job_id}"},
                            status_code=202, headers={"Location": f"/studies/{job_id}"})

    @app.get("/studies/{job_id}")
    def get_study(request: Request, job_id: str, _token: Auth) -> dict[str, Any]:
        return _job(state(request), job_id).to_dict()

    @app.get("/studies/{job_id}/slices/{k}.png", response_class=Response)
    def slice_png(request: Request, job_id: str, k: int, _token: Auth,
                  window: Annotated[str, Query(description="lung or mediastinum")] = "lung") -> Response:
        svc = state(request)
        job = _job(svc, job_id)
        values = _slice_array(svc, job, VOLUME_FILE, k)
        is_hu = bool((job.result or {}).get("is_hu", True))
        return Response(images.png_bytes(images.to_grey(values, window=window, is_hu=is_hu)), media_type=PNG)

    @app.get("/studies/{job_id}/overlay/{k}.png", response_class=Response)
    def overlay_png(request: Request, job_id: str, k: int, _token: Auth) -> Response:
        """The explanation heatmap of slice k as an RGBA layer (alpha grows with the heat)."""
        svc = state(request)
        heat = _slice_array(svc, _job(svc, job_id), HEATMAP_FILE, k).astype(np.float32) / HEAT_LEVELS
        return Response(images.png_bytes(images.heat_rgba(heat)), media_type=PNG)

    @app.get("/worklist")
    def worklist(request: Request, _token: Auth, status: str | None = None,
                 predicted_class: Annotated[str | None, Query(alias="class")] = None,
                 sort: str = "covid_probability", order: str = "desc",
                 limit: Annotated[int, Query(ge=1, le=10000)] = 500) -> dict[str, Any]:
        """Jobs sorted by COVID-19 probability (highest first), filtered by status and class."""
        if order not in ("asc", "desc"):
            raise ServiceError(f"order must be 'asc' or 'desc', not {order!r}.")
        jobs = state(request).store.list_jobs(status=status, predicted_class=predicted_class, sort=sort,
                                              descending=order == "desc", limit=limit)
        items = []
        for j in jobs:
            d = j.to_dict(with_result=False)
            r = j.result or {}
            d.update({k: r.get(k) for k in ("num_slices", "abnormal_fraction", "model_name")})
            items.append(d)
        return {"items": items, "count": len(items)}


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
