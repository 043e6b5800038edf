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
from datetime import UTC, datetime, timedelta
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
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy import text as sql_text
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
    # archive triage (issue 24): one row per (series, analysis version), who ran it
    job_key: Mapped[str | None] = mapped_column(String(400), unique=True, index=True, nullable=True)
    """``<series uid>@<checkpoint or analysis version>``: a re-run finds the row instead of adding one."""
    target_series_uid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The series to read from ``source_path`` (a folder may hold several studies)."""
    analysis_version: Mapped[str | None] = mapped_column(String(256), nullable=True)
    node: Mapped[str | None] = mapped_column(String(256), nullable=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApiToken(Base):
    """An API token: only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: _now())


class WebSession(Base):
    """A browser session (`POST /login`): the cookie holds a random session id, never the API token;
    only the id's sha256 is stored, with the token's name and the expiry."""

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_name: Mapped[str] = mapped_column(String(128), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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
    job_key: str | None = None
    target_series_uid: str | None = None
    analysis_version: str | None = None
    node: str | None = None
    device: str | None = None

    def to_dict(self, *, with_result: bool = True) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not with_result:
            d.pop("result")
        return d


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime) -> datetime:
    """``dt`` in UTC (SQLite gives back naive datetimes)."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


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
        job_key=job.job_key, target_series_uid=job.target_series_uid, analysis_version=job.analysis_version,
        node=job.node, device=job.device,
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
            add_missing_columns(self.engine)
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
                keyed = s.scalar(select(Job.job_key).where(Job.id == job_id)) is not None
                uid = {} if keyed else {"series_uid": series_uid}  # keyed jobs: set by add_keyed_job
                s.execute(update(Job).where(Job.id == job_id).values(**uid, **values))
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

    # ---- archive triage (keyed jobs) ---------------------------------------
    def add_keyed_job(self, key: str, source_path: str | Path, *, series_uid: str | None,
                      study_uid: str | None, version: str) -> tuple[JobView, bool]:
        """The job of ``key`` (series uid + analysis version), inserted queued when new; returns
        (job, created). Safe against concurrent drivers: the unique key decides. The row also takes
        ``series_uid`` when no other job holds that series yet (the worklist shows it)."""
        existing = self.find_by_key(key)
        if existing is not None:
            return existing, False
        holder = self.find_by_series(series_uid) if series_uid else None
        job = Job(id=uuid.uuid4().hex, job_key=key, source_path=str(source_path),
                  series_uid=series_uid if holder is None else None, study_uid=study_uid,
                  target_series_uid=series_uid, analysis_version=version, status=STATUS_QUEUED)
        try:
            with self._session() as s, s.begin():
                s.add(job)
        except IntegrityError:  # another driver inserted it (or the series) in between
            found = self.find_by_key(key)
            if found is None:
                job.series_uid = None
                with self._session() as s, s.begin():
                    s.add(job)
                return _view(job), True
            return found, False
        return _view(job), True

    def find_by_key(self, key: str) -> JobView | None:
        with self._session() as s:
            job = s.scalars(select(Job).where(Job.job_key == key)).first()
            return _view(job) if job else None

    def claim(self, job_id: str) -> JobView | None:
        """Mark one queued job 'running' (attempts + 1); None when it is not queued (done, taken)."""
        with self._session() as s, s.begin():
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == STATUS_QUEUED)
                            .values(status=STATUS_RUNNING, attempts=Job.attempts + 1, updated_at=_now()))
            return _view(s.get(Job, job_id)) if res.rowcount else None  # type: ignore[arg-type]

    def requeue_if_running(self, job_id: str) -> bool:
        """Put a job back to 'queued' only if it is still 'running' (its worker died before committing);
        False when it ended meanwhile."""
        with self._session() as s, s.begin():
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == STATUS_RUNNING)
                            .values(status=STATUS_QUEUED, updated_at=_now()))
            return bool(res.rowcount)

    def fail_if_running(self, job_id: str, message: str) -> bool:
        """Fail a job that is still 'running' (its worker died); False when it ended meanwhile."""
        with self._session() as s, s.begin():
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == STATUS_RUNNING)
                            .values(status=STATUS_FAILED, error=message, updated_at=_now()))
            return bool(res.rowcount)

    def set_worker(self, job_id: str, node: str | None, device: str | None) -> None:
        """Record which node and device run a job."""
        with self._session() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(node=node, device=device))

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
        """Delete the token called ``name`` and end its browser sessions; False when there is none."""
        with self._session() as s, s.begin():
            tok = s.scalars(select(ApiToken).where(ApiToken.name == name)).first()
            if tok is None:
                return False
            s.delete(tok)
            s.execute(delete(WebSession).where(WebSession.token_name == name))
            return True

    def token_names(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(select(ApiToken.name).order_by(ApiToken.created_at)))

    # ---- browser sessions -----------------------------------------------------
    def create_session(self, token_name: str, max_age_s: float) -> str:
        """A new session for the token called ``token_name``, valid ``max_age_s`` seconds; returns its
        id (the cookie value; only its sha256 is kept). Expired sessions are swept here."""
        session_id = secrets.token_urlsafe(TOKEN_BYTES)
        now = _now()
        with self._session() as s, s.begin():
            s.execute(delete(WebSession).where(WebSession.expires_at < now))
            s.add(WebSession(id_sha256=hash_token(session_id), token_name=token_name,
                             expires_at=now + timedelta(seconds=max_age_s)))
        return session_id

    def check_session(self, session_id: str) -> str | None:
        """The token name of a live session (not ended, not expired, its token not revoked), else None."""
        with self._session() as s:
            row = s.get(WebSession, hash_token(session_id))
            if row is None or _aware(row.expires_at) <= _now():
                return None
            alive = s.scalars(select(ApiToken.name).where(ApiToken.name == row.token_name)).first()
            return row.token_name if alive is not None else None

    def end_session(self, session_id: str) -> bool:
        """Forget a session (sign-out); False when it was not there."""
        with self._session() as s, s.begin():
            return s.execute(delete(WebSession).where(
                WebSession.id_sha256 == hash_token(session_id))).rowcount > 0

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


def add_missing_columns(engine: Any) -> list[str]:
    """Add columns of `Job` that an older database lacks (new nullable columns only, with their
    indexes); returns their names. `create_all` makes new tables but never alters an existing one."""
    present = {c["name"] for c in inspect(engine).get_columns(Job.__tablename__)}
    missing = [c for c in Job.__table__.columns if c.name not in present]
    with engine.begin() as con:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            con.execute(sql_text(f'ALTER TABLE {Job.__tablename__} ADD COLUMN "{column.name}" {kind}'))
    names = {c.name for c in missing}
    for index in Job.__table__.indexes:
        if names & {c.name for c in index.columns}:
            index.create(engine, checkfirst=True)
    return [c.name for c in missing]


def is_sqlite(db: str | Path) -> bool:
    """True when ``db`` names a SQLite database (a file path or a sqlite:// URL)."""
    value = str(db)
    return "://" not in value or value.startswith("sqlite")


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
