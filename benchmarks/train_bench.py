"""Training throughput per model on CPU, and the data loader's throughput measured on its own.

Writes benchmarks/out/train_bench.json. Usage: ``python benchmarks/train_bench.py [--steps N]``.
Inputs are synthetic phantom slices/volumes at the stated (reduced) sizes; the loader number is
``SliceDataset`` with the covidnet-ct2 recipe (COVIDNet-CT augmentation on) over in-memory HU slices.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covidct.models import create_model

OUT = Path(__file__).resolve().parent / "out" / "train_bench.json"
SLICE_SIZE = 128
SLICE_BATCH = 16
WARMUP_STEPS = 1
MODELS: dict[str, dict[str, Any]] = {
    "covidnet-ct2-s": {
        "overrides": {"input_size": SLICE_SIZE},
        "input": (SLICE_BATCH, 3, SLICE_SIZE, SLICE_SIZE),
    },
    "covidnet-ct2-l": {
        "overrides": {"input_size": SLICE_SIZE},
        "input": (SLICE_BATCH, 3, SLICE_SIZE, SLICE_SIZE),
    },
    "covidctnet-denoiser": {"overrides": {"input_size": SLICE_SIZE}, "input": (8, 1, SLICE_SIZE, SLICE_SIZE)},
    "covidctnet-classifier": {"overrides": {"input_shape": (1, 50, 128, 128)}, "input": (2, 1, 50, 128, 128)},
}


def time_model(name: str, spec: dict[str, Any], steps: int, channels_last: bool) -> dict[str, Any]:
    """Seconds per SGD step and items per second of one model at its stated input."""
    model = create_model(name, **spec["overrides"]).train()
    x = torch.rand(spec["input"])
    if channels_last and x.ndim == 4:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    denoise = name.endswith("denoiser")
    y = x if denoise else torch.zeros(x.shape[0], dtype=torch.long)
    loss_fn = nn.functional.mse_loss if denoise else nn.functional.cross_entropy
    times = []
    for step in range(steps + WARMUP_STEPS):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        if step >= WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
    per_step = float(np.median(times))
    return {
        "input": list(spec["input"]),
        "channels_last": channels_last and x.ndim == 4,
        "s_per_step": round(per_step, 4),
        "items_per_s": round(spec["input"][0] / per_step, 2),
    }


def time_loader(n_items: int = 64) -> dict[str, Any]:
    """Slices per second of SliceDataset + covidnet-ct2 recipe with augmentation, no model."""
    from covidct.preprocessing import get_recipe
    from covidct.synthetic import make_phantom
    from covidct.training.datasets import SliceDataset, SliceRef

    phantom = make_phantom("COVID-19", shape=(8, 256, 256), spacing=(5.0, 0.6, 0.6), seed=0)
    refs = [SliceRef(_Rec(f"c{i}", "mem", "COVID-19"), i % 8) for i in range(n_items)]
    ds = SliceDataset(
        refs,
        get_recipe("covidnet-ct2", size=SLICE_SIZE),
        ("Normal", "Pneumonia", "COVID-19"),
        loader=lambda ref: (phantom.volume.array[ref.slice_index], True),
        augment=True,
    )
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    elapsed = time.perf_counter() - t0
    return {
        "source_size": 256,
        "output_size": SLICE_SIZE,
        "augment": True,
        "items": n_items,
        "items_per_s": round(n_items / elapsed, 2),
    }


class _Rec:
    def __init__(self, case_id: str, path: str, label: str) -> None:
        self.case_id, self.path, self.label, self.box = case_id, path, label, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "models": {},
    }
    results["loader"] = time_loader()
    for name in args.models:
        results["models"][name] = time_model(name, MODELS[name], args.steps, channels_last=True)
        print(name, results["models"][name], flush=True)
    slice_model = results["models"].get("covidnet-ct2-s")
    if slice_model:
        results["loader_to_model_ratio_ct2_s"] = round(
            results["loader"]["items_per_s"] / slice_model["items_per_s"], 2
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
