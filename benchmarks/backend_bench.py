"""PyTorch vs ONNX Runtime on CPU for the slice models at 512 px: seconds per batch (wall and
process CPU), slices/s, the backend `choose_backend("auto")` picks, and max |p_onnx - p_torch|.

Untrained weights (timing only; BatchNorm statistics randomised so outputs differ per input).
Passes alternate between backends so machine load hits both alike; medians of ``--repeats``.
Writes benchmarks/out/backend_bench.json. Usage: python benchmarks/backend_bench.py [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out" / "backend_bench.json"
SIZE = 512
BATCH = 8


def _model(name: str) -> torch.nn.Module:
    from covidct.models import create_model

    torch.manual_seed(0)
    model = create_model(name, input_size=SIZE)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def bench(name: str, threads: int, repeats: int, folder: Path) -> dict[str, Any]:
    from covidct.models.backends import TorchBackend, choose_backend

    torch.set_num_threads(threads)
    model = _model(name)
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    backends = {"torch": TorchBackend(model), "onnx": choose_backend(model, (3, SIZE, SIZE), "onnx",
                                                                      folder=folder, threads=threads)}
    outputs = {k: b.run(x, BATCH)[0] for k, b in backends.items()}  # warm-up
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in backends}
    for _ in range(repeats):
        for key, backend in backends.items():
            cpu, wall = time.process_time(), time.perf_counter()
            backend.run(x, BATCH)
            times[key]["wall"].append(time.perf_counter() - wall)
            times[key]["cpu"].append(time.process_time() - cpu)
    row: dict[str, Any] = {"model": name, "threads": threads, "batch": BATCH, "size": SIZE}
    for key, t in times.items():
        wall, cpu = statistics.median(t["wall"]), statistics.median(t["cpu"])
        row[key] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "slices_per_s": round(BATCH / wall, 2),
                    "slices_per_cpu_s": round(BATCH / cpu, 2)}
    row["onnx_over_torch_wall"] = round(row["torch"]["wall_s"] / row["onnx"]["wall_s"], 2)
    row["onnx_over_torch_cpu"] = round(row["torch"]["cpu_s"] / row["onnx"]["cpu_s"], 2)
    row["max_abs_prob_diff"] = float(np.abs(outputs["onnx"] - outputs["torch"]).max())
    row["auto_picks"] = choose_backend(model, (3, SIZE, SIZE), "auto", folder=folder, threads=threads).name
    row["load_average"] = os.getloadavg()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=["covidnet-ct2-s", "covidnet-ct2-l"])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            for threads in args.threads:
                rows.append(bench(name, threads, args.repeats, Path(d)))
                print(json.dumps(rows[-1]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "cpu_count": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
