"""Benchmark: `covidct cohort` on the released COVIDx CT split files (read, metadata, summary, file check).

Times, per split file in ../shared/data/covidx-ct-splits, the in-process work of the command (best of
REPEATS, wall and CPU) and one end-to-end `python -m covidct.cli.main cohort FILE --json` process
(interpreter start included; wall and the child's user + sys CPU). No images are present there, so the
missing-file check lists one empty folder. CPU seconds are the robust figure on a shared machine.
Run: ``.venv/bin/python benchmarks/cohort_bench.py``; writes benchmarks/out/cohort_bench.json.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from covidct.io.cohort import read_cohort
from covidct.io.cohort_summary import summarize_cohort

SPLITS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covidx-ct-splits"
REPEATS = 3
OUT = Path(__file__).parent / "out" / "cohort_bench.json"


def time_in_process(path: Path) -> tuple[float, float, dict]:
    """Best wall and best CPU seconds of read + summary, and the summary."""
    best_wall, best_cpu, summary = float("inf"), float("inf"), {}
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = read_cohort(path)
        summary = summarize_cohort(records, path=path).to_dict()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, summary


def time_cli(path: Path) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of one `covidct cohort FILE --json` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, "-m", "covidct.cli.main", "cohort", str(path), "--json"]
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    rows = []
    for path in sorted(SPLITS.glob("*_COVIDx_CT-*.txt")):
        wall, cpu, summary = time_in_process(path)
        cli_wall, cli_cpu = time_cli(path)
        rows.append(
            {
                "file": path.name,
                "slices": summary["cases"],
                "patients": summary["patients"],
                "in_process_wall_s": round(wall, 3),
                "in_process_cpu_s": round(cpu, 3),
                "cli_wall_s": round(cli_wall, 3),
                "cli_cpu_s": round(cli_cpu, 3),
            }
        )
        print(rows[-1])
    OUT.parent.mkdir(exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    OUT.write_text(json.dumps({"machine": platform.node(), "date": date, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
