"""Run the fuzz corpus: every case in its own forked child with memory and time caps.

Design (2 shared cores): ``workers`` server processes (``python harness.py --serve``) each import
covidct's readers once, then for every case index they receive: fork a child that builds the case
(`corpus.make_case`), sets ``RLIMIT_AS`` and runs ``read_volume`` / ``read_cohort``; the server waits
with a wall-clock cap, kills a child that overruns (a hang) and reports one JSON line: outcome,
error type and message, seconds, peak RSS (``ru_maxrss`` of the child).

Outcomes: ``ok`` (a volume or records that pass an independent sanity check) and ``refused`` (a
`CovidCTError`) are good; ``crash`` (any other exception), ``memory`` (MemoryError under the cap),
``hang`` (killed at the time cap), ``died`` (killed by a signal), ``insane`` (a volume with NaN/inf,
bad spacing/origin/direction or empty) and ``over-budget`` (peak RSS over `RSS_BUDGET_MB`) are bad.

Command line (the slow run of docs/results.md):
    python tests/fuzz/harness.py --cases 10000 --workers 2 --out fuzz-report.json
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MEMORY_CAP_BYTES = 3 * 1024**3
"""RLIMIT_AS of each case: address space, a little above the ~2 GB target for thread stacks/arenas."""
RSS_BUDGET_MB = 2048
"""Peak resident memory a case may reach (the issue's '~2 GB')."""
TIME_CAP_S = 30.0
GOOD = ("ok", "refused")
BAD = ("crash", "memory", "hang", "died", "insane", "over-budget", "harness")


@dataclass
class Outcome:
    index: int
    family: str
    variant: str
    kind: str
    outcome: str
    error: str
    message: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    path: str


# ---------------------------------------------------------------- child side
def _sane_volume(volume: object) -> str:
    """'' when the volume is sane, else what is wrong (checked independently of covidct's own checks)."""
    import numpy as np

    arr = volume.array  # type: ignore[attr-defined]
    problems = []
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.size == 0:
        return f"array shape {getattr(arr, 'shape', None)}"
    if arr.dtype != np.float32:
        problems.append(f"dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        problems.append("non-finite voxels")
    spacing = np.asarray(volume.spacing, dtype=float)  # type: ignore[attr-defined]
    if spacing.shape != (3,) or not np.isfinite(spacing).all() or (spacing <= 0).any():
        problems.append(f"spacing {volume.spacing}")  # type: ignore[attr-defined]
    origin = np.asarray(volume.origin, dtype=float)  # type: ignore[attr-defined]
    if origin.shape != (3,) or not np.isfinite(origin).all():
        problems.append(f"origin {volume.origin}")  # type: ignore[attr-defined]
    direction = np.asarray(volume.direction, dtype=float)  # type: ignore[attr-defined]
    if direction.shape != (3, 3) or not np.isfinite(direction).all():
        problems.append("direction")
    return "; ".join(problems)


def _run_case(case: object) -> dict[str, str]:
    """In the child: call the reader, classify the result."""
    from covidct.errors import CovidCTError
    from covidct.io import read_cohort, read_volume

    try:
        if case.kind == "cohort":  # type: ignore[attr-defined]
            records = read_cohort(case.path)  # type: ignore[attr-defined]
            return {"outcome": "ok", "error": "", "message": f"{len(records)} records"}
        volume = read_volume(case.path)  # type: ignore[attr-defined]
        problem = _sane_volume(volume)
        if problem:
            return {"outcome": "insane", "error": "", "message": problem}
        return {"outcome": "ok", "error": "", "message": f"shape {list(volume.shape)}"}
    except CovidCTError as exc:
        return {"outcome": "refused", "error": type(exc).__name__, "message": str(exc)[:300]}
    except MemoryError as exc:
        return {"outcome": "memory", "error": "MemoryError", "message": str(exc)[:300]}
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzz looks for
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
        return {"outcome": "crash", "error": type(exc).__name__, "message": f"{where}: {str(exc)[:250]}"}


def _child(seeds: object, index: int, seed: int, case_dir: Path, write_fd: int) -> None:
    from tests.fuzz.corpus import make_case

    result: dict[str, object]
    try:
        case = make_case(seeds, index, seed, case_dir)  # type: ignore[arg-type]
        result = {"family": case.family, "variant": case.variant, "kind": case.kind, "path": str(case.path)}
    except Exception as exc:  # noqa: BLE001 - a generator bug is reported, not hidden
        result = {
            "family": "?",
            "variant": "?",
            "kind": "?",
            "path": "",
            "outcome": "harness",
            "error": type(exc).__name__,
            "message": f"generator: {exc}"[:300],
        }
    else:
        os.write(write_fd, (json.dumps(result) + "\n").encode())  # what the case is, before running it
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))
        result = _run_case(case)
    os.write(write_fd, (json.dumps(result) + "\n").encode())


def _fork_case(seeds: object, index: int, seed: int, work: Path) -> Outcome:
    """Fork one child for case ``index``; wait at most TIME_CAP_S; collect its result and rusage."""
    case_dir = work / f"case{index}"
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            _child(seeds, index, seed, case_dir, write_fd)
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    os.close(write_fd)
    status, usage = 0, None
    killed = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > TIME_CAP_S:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            killed = True
            break
        time.sleep(0.002)
    seconds = time.monotonic() - start
    with os.fdopen(read_fd, "rb") as fh:
        lines = [json.loads(line) for line in fh.read().decode().splitlines() if line.strip()]
    info: dict[str, object] = {}
    for line in lines:
        info.update(line)
    if killed:
        info.update(outcome="hang", error="", message=f"killed after {TIME_CAP_S:.0f} s")
    elif "outcome" not in info:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        info.update(
            outcome="died", error=f"signal {sig}" if sig else f"exit {os.WEXITSTATUS(status)}", message=""
        )
    peak_mb = (usage.ru_maxrss / 1024) if usage else 0.0
    cpu = (usage.ru_utime + usage.ru_stime) if usage else 0.0
    if info["outcome"] in GOOD and peak_mb > RSS_BUDGET_MB:
        info.update(outcome="over-budget", message=f"peak RSS {peak_mb:.0f} MB")
    shutil.rmtree(case_dir, ignore_errors=True)
    return Outcome(
        index=index,
        family=str(info.get("family", "?")),
        variant=str(info.get("variant", "?")),
        kind=str(info.get("kind", "?")),
        outcome=str(info["outcome"]),
        error=str(info.get("error", "")),
        message=str(info.get("message", "")),
        seconds=round(seconds, 3),
        cpu_seconds=round(cpu, 3),
        peak_rss_mb=round(peak_mb, 1),
        path=str(info.get("path", "")),
    )


def serve(seeds_dir: Path, seed: int) -> None:
    """Server loop: read case indices on stdin, answer one JSON Outcome line each on stdout."""
    import pickle

    import covidct.io  # noqa: F401 - imported once, before forking
    import tests.fuzz.corpus  # noqa: F401

    seeds = pickle.loads((seeds_dir / "ready").read_bytes())
    work = Path(tempfile.mkdtemp(prefix="covidct-fuzz-"))
    try:
        for line in sys.stdin:
            outcome = _fork_case(seeds, int(line), seed, work)
            sys.stdout.write(json.dumps(asdict(outcome)) + "\n")
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- parent side
def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def prepare_seed_dir(seeds_dir: Path, shared: Path | None) -> None:
    """Build the seeds once (in a subprocess with the same environment as the servers) and pickle them."""
    code = (
        "import pickle, sys; from pathlib import Path; from tests.fuzz.corpus import prepare_seeds; "
        "d = Path(sys.argv[1]); s = prepare_seeds(d, Path(sys.argv[2]) if sys.argv[2] else None); "
        "(d / 'ready').write_bytes(pickle.dumps(s))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(seeds_dir), str(shared or "")],
        check=True,
        env=_child_env(),
        cwd=REPO_ROOT,
    )


def run_corpus(
    n_cases: int,
    *,
    seed: int = 0,
    workers: int = 2,
    shared: Path | None = None,
    work_dir: Path | None = None,
    progress: bool = False,
) -> list[Outcome]:
    """Run cases 0..n_cases-1 on ``workers`` fork servers; returns one Outcome per case, in order."""
    owned = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="covidct-fuzz-seeds-")) if owned else work_dir
    seeds_dir = work_dir / "seeds"
    try:
        if not (seeds_dir / "ready").exists():
            prepare_seed_dir(seeds_dir, shared)
        todo: queue.Queue[int] = queue.Queue()
        for i in range(n_cases):
            todo.put(i)
        results: list[Outcome] = []
        lock = threading.Lock()

        def drive() -> None:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve",
                str(seeds_dir),
                "--seed",
                str(seed),
            ]
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_child_env(), cwd=REPO_ROOT
            )
            assert proc.stdin is not None and proc.stdout is not None
            try:
                while True:
                    try:
                        i = todo.get_nowait()
                    except queue.Empty:
                        break
                    proc.stdin.write(f"{i}\n")
                    proc.stdin.flush()
                    answer = proc.stdout.readline()
                    if not answer:
                        raise RuntimeError(f"fuzz server died at case {i}")
                    with lock:
                        results.append(Outcome(**json.loads(answer)))
                        if progress and len(results) % 500 == 0:
                            print(f"{len(results)} / {n_cases} cases", file=sys.stderr, flush=True)
            finally:
                proc.stdin.close()
                proc.wait(timeout=60)

        threads = [threading.Thread(target=drive) for _ in range(max(1, workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(results) != n_cases:
            raise RuntimeError(f"only {len(results)} of {n_cases} cases came back")
        return sorted(results, key=lambda o: o.index)
    finally:
        if owned:
            shutil.rmtree(work_dir, ignore_errors=True)


def summarize(outcomes: list[Outcome]) -> dict[str, object]:
    """Families x outcomes, error types, peak memory and time per family, and the bad cases."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    peak: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    slowest: dict[str, float] = defaultdict(float)
    errors: Counter[str] = Counter()
    for o in outcomes:
        table[o.family][o.outcome] += 1
        peak[o.family] = max(peak[o.family], o.peak_rss_mb)
        seconds[o.family] += o.seconds
        cpu[o.family] += o.cpu_seconds
        slowest[o.family] = max(slowest[o.family], o.seconds)
        if o.error:
            errors[o.error] += 1
    bad = [asdict(o) for o in outcomes if o.outcome not in GOOD]
    return {
        "cases": len(outcomes),
        "bad": len(bad),
        "families": {f: dict(c) for f, c in sorted(table.items())},
        "peak_rss_mb": {f: peak[f] for f in sorted(peak)},
        "case_seconds_total": {f: round(seconds[f], 1) for f in sorted(seconds)},
        "case_cpu_seconds_total": {f: round(cpu[f], 1) for f in sorted(cpu)},
        "case_seconds_max": {f: round(slowest[f], 2) for f in sorted(slowest)},
        "error_types": dict(errors.most_common()),
        "bad_cases": bad[:200],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shared", default=str(REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.seed)
        return
    shared = Path(args.shared) if args.shared and Path(args.shared).is_dir() else None
    start = time.monotonic()
    outcomes = run_corpus(args.cases, seed=args.seed, workers=args.workers, shared=shared, progress=True)
    summary = summarize(outcomes)
    summary["wall_seconds"] = round(time.monotonic() - start, 1)
    summary["seed_origin"] = "shared" if shared else "synthetic"
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    sys.path[:0] = [str(REPO_ROOT / "src"), str(REPO_ROOT)]
    main()
