"""The job store (SQLAlchemy 2): studies/jobs and API tokens; SQLite file by default, PostgreSQL by URL.

Every status change is committed at once, so a killed process loses nothing it had accepted:
jobs left 'running' are put back to 'queued' by `JobStore.requeue_stale` at start-up.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from covidct.errors import ServiceError

STATUS_QUEUED = "queued"
STATUS_RUNNING = "running"
STATUS_DONE = "done"
STATUS_FAILED = "failed"
STATUSES = (STATUS_QUEUED, STATUS_RUNNING, STATUS_DONE, STATUS_FAILED)

TOKEN_BYTES = 32
SQLITE_BUSY_TIMEOUT_S = 60
SORT_KEYS = ("covid_probability", "abnormal_fraction", "severity_score", "created_at", "updated_at", "status")
SORT_ALIASES = {"involvement": "abnormal_fraction", "severity": "severity_score"}
"""Other names the worklist accepts for a sort key."""
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
POSTGRES_DRIVER_SCHEME = "postgresql+psycopg://"
"""Plain PostgreSQL URLs use psycopg 3 (the serve extra), not SQLAlchemy's default psycopg2."""


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One study to analyse (an upload, a folder of a triage run)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    series_uid: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    study_uid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source_path: Mapped[str] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=STATUS_QUEUED)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    predicted_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    covid_probability: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    abnormal_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Quantitative-CT involvement (0-1) of the lungs."""
    severity_score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Quantitative-CT severity score (sum of the zone scores)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: _now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: _now())


class ApiToken(Base):
    """An API token: only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: _now())


@dataclass(frozen=True)
class JobView:
    """A detached, JSON-ready copy of a job row."""

    id: str
    series_uid: str | None
    study_uid: str | None
    source_path: str
    status: str
    error: str | None
    result: dict[str, Any] | None
    probabilities: dict[str, float] | None
    predicted_class: str | None
    covid_probability: float | None
    attempts: int
    created_at: str
    updated_at: str
    abnormal_fraction: float | None = None
    severity_score: int | None = None

    def to_dict(self, *, with_result: bool = True) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not with_result:
            d.pop("result")
        return d


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.isoformat(timespec="seconds")


def _view(job: Job) -> JobView:
    return JobView(
        id=job.id, series_uid=job.series_uid, study_uid=job.study_uid, source_path=job.source_path,
        status=job.status, error=job.error, result=job.result, probabilities=job.probabilities,
        predicted_class=job.predicted_class, covid_probability=job.covid_probability,
        attempts=job.attempts, created_at=_iso(job.created_at), updated_at=_iso(job.updated_at),
        abnormal_fraction=job.abnormal_fraction, severity_score=job.severity_score,
    )


def hash_token(token: str) -> str:
    """sha256 hex digest of a token (what the store keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def database_url(db: str | Path) -> str:
    """A SQLAlchemy URL from a URL or a file path (a path means SQLite; postgresql:// means psycopg 3)."""
    text = str(db)
    for scheme in POSTGRES_SCHEMES:
        if text.startswith(scheme):
            return POSTGRES_DRIVER_SCHEME + text[len(scheme):]
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class JobStore:
    """Jobs and API tokens in one database. Thread-safe; every method commits its own transaction."""

    def __init__(self, db: str | Path) -> None:
        self.url = database_url(db)
        is_sqlite = self.url.startswith("sqlite")
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False} if is_sqlite else {}
        try:
            self.engine = create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
            if is_sqlite:
                event.listen(self.engine, "connect", _sqlite_pragmas)
            Base.metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
        except (SQLAlchemyError, ArgumentError, ImportError) as exc:
            raise ServiceError(f"Cannot open the job database {_safe_url(self.url)}: "
                               f"{_first_line(getattr(exc, 'orig', None) or exc)}. Check that the database "
                               "server runs and the URL (user, host, port, database name) is right, or give "
                               "a SQLite file path.") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._claim_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    # ---- jobs ---------------------------------------------------------------
    def add_job(self, source_path: str | Path, *, series_uid: str | None = None,
                job_id: str | None = None) -> str:
        """Insert a queued job and commit it; returns its id."""
        job = Job(id=job_id or uuid.uuid4().hex, source_path=str(source_path), series_uid=series_uid,
                  status=STATUS_QUEUED)
        with self._session() as s, s.begin():
            s.add(job)
        return job.id

    def get(self, job_id: str) -> JobView | None:
        with self._session() as s:
            job = s.get(Job, job_id)
            return _view(job) if job else None

    def find_by_source(self, source_path: str | Path) -> JobView | None:
        with self._session() as s:
            job = s.scalars(select(Job).where(Job.source_path == str(source_path))
                            .order_by(Job.created_at)).first()
            return _view(job) if job else None

    def find_by_series(self, series_uid: str) -> JobView | None:
        with self._session() as s:
            job = s.scalars(select(Job).where(Job.series_uid == series_uid)).first()
            return _view(job) if job else None

    def requeue_stale(self) -> int:
        """Put jobs left 'running' by a killed process back to 'queued'; returns how many."""
        return self._set_status_where(STATUS_RUNNING, STATUS_QUEUED)

    def requeue_failed(self) -> int:
        """Put failed jobs back to 'queued' (a re-run retries them); returns how many."""
        return self._set_status_where(STATUS_FAILED, STATUS_QUEUED)

    def _set_status_where(self, old: str, new: str) -> int:
        with self._session() as s, s.begin():
            res = s.execute(update(Job).where(Job.status == old).values(status=new, updated_at=_now()))
            return int(res.rowcount or 0)

    def requeue(self, job_id: str) -> None:
        with self._session() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(status=STATUS_QUEUED, error=None,
                                                                  updated_at=_now()))

    def claim_next(self, only_ids: set[str] | None = None) -> JobView | None:
        """Atomically take the oldest queued job (marks it 'running'); None when the queue is empty."""
        with self._claim_lock:
            with self._session() as s:
                query = select(Job.id).where(Job.status == STATUS_QUEUED).order_by(Job.created_at, Job.id)
                if only_ids is not None:
                    query = query.where(Job.id.in_(only_ids))
                candidates = list(s.scalars(query.limit(8)))
            for job_id in candidates:
                with self._session() as s, s.begin():
                    res = s.execute(
                        update(Job).where(Job.id == job_id, Job.status == STATUS_QUEUED)
                        .values(status=STATUS_RUNNING, attempts=Job.attempts + 1, updated_at=_now()))
                    if res.rowcount:
                        return _view(s.get(Job, job_id))  # type: ignore[arg-type]
        return None

    def complete(self, job_id: str, result: dict[str, Any]) -> None:
        """Store a result and mark the job done (one commit). A series already analysed by another
        job keeps its unique key there; this job then records ``duplicate_of``."""
        values: dict[str, Any] = {
            "status": STATUS_DONE, "error": None, "result": result,
            "probabilities": result.get("probabilities"), "predicted_class": result.get("predicted_class"),
            "covid_probability": result.get("covid_probability"), "study_uid": result.get("study_uid"),
            "abnormal_fraction": result.get("abnormal_fraction"), "severity_score": severity_of(result),
            "updated_at": _now(),
        }
        series_uid = result.get("series_uid")
        try:
            with self._session() as s, s.begin():
                s.execute(update(Job).where(Job.id == job_id).values(series_uid=series_uid, **values))
        except IntegrityError:
            other = self.find_by_series(series_uid) if series_uid else None
            result = {**result, "duplicate_of": other.id if other else None}
            result.setdefault("warnings", []).append(
                f"series {series_uid} was already analysed as job {other.id if other else '?'}")
            values["result"] = result
            with self._session() as s, s.begin():
                s.execute(update(Job).where(Job.id == job_id).values(**values))

    def fail(self, job_id: str, message: str) -> None:
        with self._session() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(status=STATUS_FAILED, error=message,
                                                                  updated_at=_now()))

    def set_series(self, job_id: str, series_uid: str | None, study_uid: str | None) -> bool:
        """Record a job's UIDs; False when another job already holds this series."""
        try:
            with self._session() as s, s.begin():
                s.execute(update(Job).where(Job.id == job_id).values(series_uid=series_uid,
                                                                      study_uid=study_uid))
            return True
        except IntegrityError:
            return False

    def list_jobs(self, *, status: str | None = None, predicted_class: str | None = None,
                  sort: str = "covid_probability", descending: bool = True,
                  limit: int | None = None) -> list[JobView]:
        """Jobs filtered by status/class, sorted (COVID-19 probability first by default; unscored last)."""
        if status is not None and status not in STATUSES:
            raise ServiceError(f"Unknown status {status!r}; expected one of {', '.join(STATUSES)}.")
        sort = SORT_ALIASES.get(sort, sort)
        if sort not in SORT_KEYS:
            raise ServiceError(f"Unknown sort key {sort[:64]!r}; expected one of "
                               f"{', '.join((*SORT_KEYS, *SORT_ALIASES))}.")
        column = getattr(Job, sort)
        order = column.desc() if descending else column.asc()
        query = select(Job).order_by(column.is_(None), order, Job.created_at)
        if status:
            query = query.where(Job.status == status)
        if predicted_class:
            query = query.where(Job.predicted_class == predicted_class)
        if limit:
            query = query.limit(limit)
        with self._session() as s:
            return [_view(j) for j in s.scalars(query)]

    def counts(self) -> dict[str, int]:
        with self._session() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        out = dict.fromkeys(STATUSES, 0)
        out.update({str(k): int(v) for k, v in rows})
        return out

    # ---- tokens -------------------------------------------------------------
    def create_token(self, name: str) -> str:
        """Create a token called ``name``; returns the token (shown once; only its sha256 is kept)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        try:
            with self._session() as s, s.begin():
                s.add(ApiToken(name=name, token_sha256=hash_token(token)))
        except IntegrityError:
            raise ServiceError(f"A token named {name!r} already exists; choose another name "
                               "or revoke it first (covidct token revoke NAME).") from None
        return token

    def revoke_token(self, name: str) -> bool:
        with self._session() as s, s.begin():
            tok = s.scalars(select(ApiToken).where(ApiToken.name == name)).first()
            if tok is None:
                return False
            s.delete(tok)
            return True

    def token_names(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(select(ApiToken.name).order_by(ApiToken.created_at)))

    def check_token(self, token: str) -> str | None:
        """The name of the token, or None when it is unknown."""
        digest = hash_token(token)
        with self._session() as s:
            for tok in s.scalars(select(ApiToken)):
                if secrets.compare_digest(tok.token_sha256, digest):
                    return tok.name
        return None


def severity_of(result: dict[str, Any]) -> int | None:
    """The quantitative-CT severity score of a result dict, or None when it was not computed."""
    quant = result.get("quantitative") or {}
    value = quant.get("severity_total") if quant.get("available") else None
    return int(value) if isinstance(value, int | float) else None


def _add_missing_columns(engine: Any) -> None:
    """Add columns this version defines but an older database lacks (all are nullable): additive
    schema changes need no migration tool."""
    from sqlalchemy import inspect, text

    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or not column.nullable:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as con:
                con.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _safe_url(url: str) -> str:
    """The URL with its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.close()


def result_json(result: dict[str, Any]) -> str:
    return json.dumps(result, sort_keys=True)
