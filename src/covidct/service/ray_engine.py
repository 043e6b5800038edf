"""Archive triage on Ray: an actor pool over the job store (``covidct triage --engine ray``).

Each actor (`StudyWorker`) builds one `Predictor` (checkpoints or the weight-free analysis) when it
starts and keeps it; it opens the job database itself and commits each study's result or failure
(`jobs.run_job`), with the node and device that ran it. The driver (`RayRunner`) only claims jobs
('queued' -> 'running', one commit) and hands their ids to idle actors, one study per actor in flight.

Faults: an actor or node that dies mid-study raises in the driver; the job goes back to 'queued' only
if it is still 'running' (`JobStore.requeue_if_running`: a worker that committed before dying keeps
its result), and runs again on another actor. A study that has killed `MAX_WORKER_DEATHS` workers is
failed with a message instead. A killed driver takes its actors with it; its 'running' jobs are
queued again by the next run (`triage.enqueue`). Every study ends in exactly one row.

Ray is imported here only (the extra ``covidct[scale]``), so ``import covidct`` stays light.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covidct.errors import ServiceError
from covidct.service.store import JobStore, is_sqlite
from covidct.service.triage import JobDone

MAX_WORKER_DEATHS = 2
"""A study whose worker died this many times is failed (it crashes its worker) instead of retried."""
ACTOR_START_TIMEOUT_S = 180.0
"""How long the driver waits for a worker when none is running (model load, a node joining)."""
WAIT_S = 1.0
PROBE_TIMEOUT_S = 5.0
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
"""A local Ray instance moves only job ids and small dicts: a small object store is enough."""
MAX_REPLACEMENTS_PER_ACTOR = 5
KIB_PER_MIB = 1024
STATS_TIMEOUT_S = 10.0
DEVICES = ("cpu", "cuda")
RAY_CLIENT_PREFIX = "ray://"
DEFAULT_RAY_PORT = 6379
DEFAULT_CLIENT_PORT = 10001


@dataclass(frozen=True)
class RaySettings:
    """Where and how to run: ``address`` None starts a local Ray for this run; 'auto' joins the cluster
    of this machine; ``ray://HOST:PORT`` (Ray client) or ``HOST:PORT`` joins a remote one."""

    address: str | None = None
    device: str = "cpu"
    actors: int | None = None
    """None: as many as the cluster's free CPUs (or GPUs for cuda) allow, at least one."""
    cpus_per_actor: float = 1.0
    local_cpus: int | None = None
    """CPUs of the local Ray instance (address None); None: all of this machine's."""

    @property
    def is_cluster(self) -> bool:
        return self.address is not None


def import_ray() -> Any:
    """The ray module; `MissingExtraError` (a `ConfigError`) naming ``covidct[scale]`` when it is absent."""
    from covidct.extras import require_extra

    require_extra("scale", "ray", feature="covidct triage --engine ray")
    import ray

    return ray


def check_settings(settings: RaySettings, db: str) -> None:
    """Refuse what cannot work before anything starts: an unknown device, a SQLite file for a cluster
    (workers on other machines cannot write to this machine's file), an address nobody answers on."""
    if settings.device not in DEVICES:
        raise ServiceError(f"Unknown device {settings.device!r} for --engine ray; expected one of "
                           f"{', '.join(DEVICES)}.")
    if settings.is_cluster and is_sqlite(db):
        raise ServiceError(f"--db {db} is a SQLite file, which workers on other machines of the Ray cluster "
                           f"at {settings.address} cannot write to. Give a PostgreSQL URL they can all reach "
                           "(--db postgresql://USER@HOST:PORT/DB), or leave out --address to run on this "
                           "machine.")
    if settings.address not in (None, "auto"):
        probe_address(settings.address)


def probe_address(address: str) -> None:
    """A TCP connect to the Ray address (seconds, instead of Ray's long retries); raises ServiceError."""
    text = address[len(RAY_CLIENT_PREFIX):] if address.startswith(RAY_CLIENT_PREFIX) else address
    default = DEFAULT_CLIENT_PORT if address.startswith(RAY_CLIENT_PREFIX) else DEFAULT_RAY_PORT
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default))
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return
    except ValueError:
        raise ServiceError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'.") from None
    except OSError as exc:
        raise ServiceError(f"Cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}). Check "
                           "that its head node runs (`ray start --head`) and the host and port, or leave "
                           "out --address to run on this machine.") from None


RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Set to "0" before ray is imported, Ray binds every node of this machine to 127.0.0.1 (its single-machine
mode) instead of the machine's network address: what a local Ray for one run needs."""


def connect(settings: RaySettings) -> Any:
    """ray.init for the settings (quiet: no dashboard, worker logs not copied to this terminal). A local Ray
    (no address) listens on loopback only, when ray was not imported before."""
    if settings.address is None:
        os.environ.setdefault(RAY_LOOPBACK_ENV, "0")
    ray = import_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "logging_level": "WARNING", "configure_logging": True}
    try:
        if settings.address is None:
            ray.init(num_cpus=settings.local_cpus or os.cpu_count() or 1,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **options)
        else:
            ray.init(address=settings.address, **options)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        where = settings.address or "a local Ray instance"
        raise ServiceError(f"Cannot start or join Ray at {where}: {_first_line(exc)}. Check the address "
                           "(`ray status` on the head node), or leave out --address.") from None
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StudyWorker:
    """A Ray actor: one Predictor and one job-store connection, kept for the actor's life."""

    def __init__(self, checkpoints: list[str], explain: bool, db: str, report_dir: str | None) -> None:
        import ray

        from covidct.errors import CovidCTError
        from covidct.service.memory import retain_freed_memory
        from covidct.service.predictor import Predictor
        from covidct.service.triage import report_writer

        context = ray.get_runtime_context()
        self.node = f"{ray.util.get_node_ip_address()}/{context.get_node_id()[:12]}"
        gpus = ray.get_gpu_ids()
        self.device = f"cuda:{gpus[0]}" if gpus else "cpu"
        self.error: str | None = None
        try:
            self.predictor = Predictor(checkpoints, explain=explain, device="cuda" if gpus else "cpu")
            self.predictor.warm_up()  # once per actor, before its first study
            retain_freed_memory()  # an actor analyses study after study: reuse what each one frees
            self.store = JobStore(db)  # ServiceError naming the database when this node cannot reach it
        except CovidCTError as exc:
            self.error = f"on node {self.node}: {exc}"
        self.on_result = report_writer(Path(report_dir) if report_dir else None)

    def ready(self) -> dict[str, Any]:
        """Where this worker runs; ``error``: why it cannot work (checked by the driver)."""
        return {"node": self.node, "device": self.device, "pid": os.getpid(), "error": self.error}

    def stats(self) -> dict[str, Any]:
        """Where it ran and its peak resident memory (MiB)."""
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB  # Linux: KiB
        return {**self.ready(), "peak_rss_mib": round(peak, 1)}

    def run(self, job_id: str) -> bool:
        """Analyse one claimed job and commit it; True when 'done'."""
        from covidct.service.jobs import run_job

        job = self.store.get(job_id)
        if job is None:
            raise ServiceError(f"job {job_id} is not in the job database any more")
        return run_job(self.store, self.predictor, job, on_result=self.on_result,
                       where=(self.node, self.device))


@dataclass
class _Slot:
    """One actor of the pool: starting (``ready_ref``), idle, or running ``job_id``."""

    actor: Any
    ready_ref: Any = None
    job_id: str | None = None
    info: dict[str, Any] | None = None


class RayRunner:
    """Runs queued jobs on a Ray actor pool (a `triage.Runner`)."""

    def __init__(self, settings: RaySettings, *, checkpoints: list[str], explain: bool, db: str,
                 report_dir: Path | None = None, worker: type[StudyWorker] = StudyWorker) -> None:
        check_settings(settings, db)
        self.settings = settings
        self.worker = worker
        self.actor_args = ([str(c) for c in checkpoints], explain, db,
                           str(Path(report_dir).resolve()) if report_dir else None)
        self.ray: Any = None
        self.nodes: Counter[str] = Counter()
        """Studies ended per node in the last run."""
        self.worker_stats: list[dict[str, Any]] = []
        """`StudyWorker.stats` of the workers alive at the end of the last run."""
        self.startup_s = 0.0
        """Seconds from the start of the last run until its first worker was ready."""

    # ---- the pool -------------------------------------------------------------------------
    def _actor_options(self) -> dict[str, Any]:
        if self.settings.device == "cuda":
            return {"num_gpus": 1, "num_cpus": self.settings.cpus_per_actor}
        return {"num_cpus": self.settings.cpus_per_actor}

    def _pool_size(self) -> int:
        if self.settings.actors:
            return self.settings.actors
        resources = self.ray.cluster_resources()
        if self.settings.device == "cuda":
            if not resources.get("GPU"):
                raise ServiceError("--device cuda but the Ray cluster has no GPU; add GPU nodes or use "
                                   "--device cpu.")
            return int(resources["GPU"])
        return max(1, int(resources.get("CPU", 1) // self.settings.cpus_per_actor))

    def _start_actor(self) -> _Slot:
        cls = self.ray.remote(self.worker).options(max_restarts=0, **self._actor_options())
        actor = cls.remote(*self.actor_args)
        return _Slot(actor=actor, ready_ref=actor.ready.remote())

    # ---- running --------------------------------------------------------------------------
    def __call__(self, store: JobStore, job_ids: list[str], on_done: JobDone) -> None:
        self.ray = connect(self.settings)
        self.startup_s = 0.0
        errors = self.ray.exceptions
        size = self._pool_size()
        slots = [self._start_actor() for _ in range(size)]
        replacements = MAX_REPLACEMENTS_PER_ACTOR * size
        pending: deque[str] = deque(job_ids)
        deaths: Counter[str] = Counter()
        waiting: dict[Any, _Slot] = {s.ready_ref: s for s in slots}
        idle_since = started = time.monotonic()
        try:
            while pending or any(s.job_id for s in slots):
                self._dispatch(store, slots, pending, waiting)
                if not waiting:  # every worker died and the replacements are used up
                    raise ServiceError(f"Every Ray worker died and {MAX_REPLACEMENTS_PER_ACTOR} replacements "
                                       f"per worker were used up, with {len(pending)} studies left queued. "
                                       "Check the nodes' memory and logs (`ray status`); re-running resumes.")
                ready, _ = self.ray.wait(list(waiting), num_returns=1, timeout=WAIT_S)
                if not ready:
                    if any(s.info for s in slots):
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since > ACTOR_START_TIMEOUT_S:
                        raise ServiceError(self._no_worker_message())
                    continue
                slot = waiting.pop(ready[0])
                if not self.startup_s and slot.info is None:
                    self.startup_s = time.monotonic() - started
                try:
                    self._finished(store, slot, ready[0], on_done)
                except (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError,
                        errors.ObjectLostError, errors.OwnerDiedError, errors.ActorUnavailableError) as exc:
                    self._died(store, slot, exc, deaths, pending, on_done)
                    slots.remove(slot)
                    if replacements > 0:
                        replacements -= 1
                        new = self._start_actor()
                        slots.append(new)
                        waiting[new.ready_ref] = new
        finally:
            self._collect_stats(slots)
            for slot in slots:
                self.ray.kill(slot.actor, no_restart=True)

    def _collect_stats(self, slots: list[_Slot]) -> None:
        refs = [s.actor.stats.remote() for s in slots if s.info is not None]
        try:
            self.worker_stats = list(self.ray.get(refs, timeout=STATS_TIMEOUT_S))
        except self.ray.exceptions.RayError:  # a worker died at the very end: stats are optional
            self.worker_stats = []

    def _dispatch(self, store: JobStore, slots: list[_Slot], pending: deque[str],
                  waiting: dict[Any, _Slot]) -> None:
        """Give each idle, started actor the next job it can claim (one study per actor in flight)."""
        for slot in slots:
            while slot.info is not None and slot.job_id is None and pending:
                job_id = pending.popleft()
                if store.claim(job_id) is None:
                    continue  # done or taken meanwhile (another driver): nothing to run
                slot.job_id = job_id
                waiting[slot.actor.run.remote(job_id)] = slot

    def _finished(self, store: JobStore, slot: _Slot, ref: Any, on_done: JobDone) -> None:
        """An actor started, or a study ended; raises Ray's error when the actor died."""
        if slot.info is None:
            info = self.ray.get(ref)
            if info.get("error"):
                raise ServiceError(f"A Ray worker could not start {info['error']}")
            slot.info = info
            return
        job_id = slot.job_id
        try:
            ok = bool(self.ray.get(ref))  # a dead actor raises here, with slot.job_id still set
        except self.ray.exceptions.RayTaskError as exc:  # beyond run_job's own handling (database)
            store.fail_if_running(job_id, f"The worker failed while recording this study: {_cause(exc)}")
            ok = False
        slot.job_id = None
        self.nodes[slot.info["node"]] += 1
        job = store.get(job_id)
        if job is not None:
            on_done(job, ok)

    def _died(self, store: JobStore, slot: _Slot, exc: Exception, deaths: Counter[str],
              pending: deque[str], on_done: JobDone) -> None:
        """An actor died (its process or node): its study is run again, or failed after repeated deaths."""
        job_id = slot.job_id
        if job_id is None:
            return
        deaths[job_id] += 1
        if deaths[job_id] >= MAX_WORKER_DEATHS:
            message = (f"The worker analysing this study died {deaths[job_id]} times (a crash or running out "
                       f"of memory: {_first_line(exc)}); the study was not retried again. Check it with "
                       "`covidct predict` on one machine.")
            store.fail_if_running(job_id, message)
        elif store.requeue_if_running(job_id):
            pending.appendleft(job_id)
            return
        job = store.get(job_id)  # failed now, or committed by the worker just before it died
        if job is not None:
            on_done(job, job.status == "done")

    def _no_worker_message(self) -> str:
        free = self.ray.available_resources()
        return (f"No Ray worker started in {ACTOR_START_TIMEOUT_S:.0f} s: each needs "
                f"{self._actor_options()} and the cluster has {dict(free)} free. Add nodes, lower "
                "--actors, or check the nodes' logs (`ray status`).")


def _cause(exc: Exception) -> str:
    """The message of the exception a Ray task raised (its covidct message when it is one)."""
    cause = getattr(exc, "cause", None)
    return _first_line(cause) if cause is not None else _first_line(exc)
