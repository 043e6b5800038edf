"""Training throughput per model on CPU, and the data loader's throughput measured on its own.

Writes benchmarks/out/train_bench.json. Usage: ``python benchmarks/train_bench.py [--steps N]``.
Inputs are synthetic phantom slices/volumes at the stated (reduced) sizes; the loader number is
``SliceDataset`` with the covidnet-ct2 recipe (COVIDNet-CT augmentation on) over in-memory HU slices.

COVIDx scale (``--covidx-tree DIR``): writes a COVIDx-format tree of synthetic 512 px PNG slices
named and boxed as the lines of ``--split`` (default: the real val_COVIDx_CT-2A.txt, 25,486 lines;
``--limit N`` for the first N), builds the decoded slice cache (``covidct cache``) beside it, and
measures, on one thread (slices/s per CPU core), the loader from PNG files and from the cache,
each with and without the paper's augmentation at 512 px, beside COVID-Net CT-2 S training
images/s at 512 px on the same machine. The tree and cache are generated data: keep them out of
the repository (default /tmp). Results go to benchmarks/out/train_bench_covidx.json.
"""

from __future__ import annotations

import argparse
import json
import os
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


REPO = Path(__file__).resolve().parents[1]
COVIDX_SPLIT = REPO.parent / "shared/data/covidx-ct-splits/val_COVIDx_CT-2A.txt"
COVIDX_SIZE = 512
BASE_SLICES = 32
NOISE_FIELDS = 8
NOISE_LEVEL = 12
"""Grey levels of per-file noise (CT PNGs are noisy; noise sets how well PNG compresses)."""
OUT_COVIDX = OUT.parent / "train_bench_covidx.json"


def _base_slices(size: int) -> np.ndarray:
    """(BASE_SLICES, size, size) uint8 lung-windowed phantom slices (chest, lungs, lesions)."""
    from covidct.preprocessing.transforms import LungWindow, Resize2D
    from covidct.synthetic import make_phantom

    phantom = make_phantom("COVID-19", shape=(BASE_SLICES, 192, 192), spacing=(8.0, 1.8, 1.8), seed=0)
    grey = Resize2D(size)(LungWindow()(phantom.volume.array))
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


def make_covidx_tree(split: Path, root: Path, limit: int | None, size: int = COVIDX_SIZE) -> dict[str, Any]:
    """Write ``root/images/<file>`` for the first ``limit`` lines of ``split`` (skipping files that
    exist) and ``root/<split name>`` with those lines. Returns counts and seconds."""
    from PIL import Image

    lines = [ln for ln in split.read_text().splitlines() if ln.strip()][:limit]
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    (root / split.name).write_text("\n".join(lines) + "\n")
    bases = _base_slices(size)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, NOISE_LEVEL, (NOISE_FIELDS, size, size), dtype=np.uint8)
    t0, written = time.perf_counter(), 0
    for i, line in enumerate(lines):
        target = images / line.split()[0]
        if target.is_file():
            continue
        pixels = np.minimum(
            bases[i % BASE_SLICES].astype(np.uint16) + noise[(i // BASE_SLICES) % NOISE_FIELDS], 255
        )
        Image.fromarray(pixels.astype(np.uint8)).save(target)
        written += 1
        if written % 2000 == 0:
            print(f"tree: {written} PNGs written ({written / (time.perf_counter() - t0):.0f}/s)", flush=True)
    png_bytes = sum(p.stat().st_size for p in images.iterdir())
    return {
        "lines": len(lines),
        "written_now": written,
        "write_s": round(time.perf_counter() - t0, 1),
        "png_mib": round(png_bytes / 2**20, 1),
        "split": str(root / split.name),
    }


def build_cache(root: Path, split_name: str) -> dict[str, Any]:
    """``covidct cache`` on the tree (once; reused when present): decode throughput and size."""
    from covidct.io.cohort import read_cohort
    from covidct.io.slice_cache import PIXELS_FILE, is_slice_cache, write_slice_cache

    out = root / "cache"
    if is_slice_cache(out):
        return {
            "folder": str(out),
            "reused": True,
            "mib": round((out / PIXELS_FILE).stat().st_size / 2**20, 1),
        }
    records = read_cohort(root / split_name, image_root=root / "images")
    t0 = time.perf_counter()
    write_slice_cache(records, out, source=split_name)
    elapsed = time.perf_counter() - t0
    return {
        "folder": str(out),
        "reused": False,
        "build_s": round(elapsed, 1),
        "decode_images_per_s": round(len(records) / elapsed, 1),
        "mib": round((out / PIXELS_FILE).stat().st_size / 2**20, 1),
    }


def time_covidx_loaders(root: Path, split_name: str, n_items: int, repeats: int) -> dict[str, Any]:
    """Slices/s on one thread: PNG vs cache, raw read and full item (512 px, augmentation on/off).

    Each figure is the median of ``repeats`` passes over the same ``n_items`` random slices;
    passes alternate between sources so that load on the shared machine hits both alike.
    """
    from covidct.io.cohort import read_cohort
    from covidct.io.slice_cache import SliceCache
    from covidct.preprocessing import get_recipe
    from covidct.training.datasets import CachedSliceLoader, SliceDataset, VolumeLoader, slice_refs

    records = read_cohort(root / split_name, image_root=root / "images")
    pick = np.random.default_rng(0).choice(len(records), size=min(n_items, len(records)), replace=False)
    refs = slice_refs([records[i] for i in pick])
    recipe = get_recipe("covidnet-ct2", size=COVIDX_SIZE)
    classes = ("Normal", "Pneumonia", "COVID-19")
    loaders = {"png": VolumeLoader(), "cache": CachedSliceLoader([SliceCache(root / "cache")])}
    timings: dict[str, list[float]] = {}
    for _ in range(repeats):
        for source, loader in loaders.items():
            t0 = time.perf_counter()
            for ref in refs:
                np.asarray(loader(ref)[0], dtype=np.float32)
            timings.setdefault(f"{source}_read", []).append(len(refs) / (time.perf_counter() - t0))
            for augment in (True, False):
                ds = SliceDataset(refs, recipe, classes, loader=loader, augment=augment, seed=0)
                t0 = time.perf_counter()
                for i in range(len(ds)):
                    ds[i]
                key = f"{source}_{'augmented' if augment else 'plain'}_512"
                timings.setdefault(key, []).append(len(refs) / (time.perf_counter() - t0))
    out: dict[str, Any] = {
        key: {"median_slices_per_s": round(float(np.median(v)), 1), "runs": [round(x, 1) for x in v]}
        for key, v in timings.items()
    }
    out["items"] = len(refs)
    for kind in ("read", "augmented_512", "plain_512"):
        png, cache = out[f"png_{kind}"]["median_slices_per_s"], out[f"cache_{kind}"]["median_slices_per_s"]
        out[f"cache_over_png_{kind}"] = round(cache / png, 2)
    return out


def covidx_main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    root = Path(args.covidx_tree)
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": str(torch.__version__),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "tree": make_covidx_tree(Path(args.split), root, args.limit),
    }
    print("tree", results["tree"], flush=True)
    if args.tree_only:
        return
    results["cache"] = build_cache(root, Path(args.split).name)
    print("cache", results["cache"], flush=True)
    results["loader_one_thread"] = time_covidx_loaders(root, Path(args.split).name, args.items, args.repeats)
    print("loader", results["loader_one_thread"], flush=True)
    batch = (args.model_batch, 3, COVIDX_SIZE, COVIDX_SIZE)
    spec = {"overrides": {"input_size": COVIDX_SIZE}, "input": batch}
    for threads in sorted({1, int(args.model_threads)}):
        torch.set_num_threads(threads)
        results[f"covidnet_ct2_s_train_512_{threads}_threads"] = time_model(
            "covidnet-ct2-s", spec, args.steps, channels_last=True
        )
        print(threads, "threads", results[f"covidnet_ct2_s_train_512_{threads}_threads"], flush=True)
    OUT_COVIDX.parent.mkdir(parents=True, exist_ok=True)
    OUT_COVIDX.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--covidx-tree", help="Folder for the synthetic COVIDx tree + cache (/tmp/covidx).")
    parser.add_argument("--split", default=str(COVIDX_SPLIT), help="COVIDx split whose file names to use.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N lines of the split.")
    parser.add_argument("--tree-only", action="store_true", help="Only write the PNG tree.")
    parser.add_argument("--items", type=int, default=200, help="Slices per loader timing pass.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-batch", type=int, default=8)
    parser.add_argument("--model-threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.covidx_tree:
        covidx_main(args)
        return
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
