"""CPU forward throughput and peak memory of every covidct model at its paper input.

Each case runs in its own subprocess (so the peak RSS, ``ru_maxrss``, is that model's alone),
with ``torch.set_num_threads(THREADS)``, flush-denormal on (random weights), eval mode and
``torch.inference_mode()``. 2D models are timed contiguous and ``channels_last`` (CT-2 also
with BatchNorm folded into the convolutions); each case reports the median and best of 5 timed
forwards (2, no warm-up, for DenseNet-264 3D), since the 2 cores are shared with other jobs. Reference points
in the same run: MONAI DenseNet121 (2D) and EfficientNet-B0 at 3x512x512; the report gives each
model's time per slice relative to them.

Usage::

    .venv/bin/python benchmarks/models_bench.py            # full paper inputs (~3-5 min on 2 cores)
    .venv/bin/python benchmarks/models_bench.py --quick    # tiny inputs, smoke test
    .venv/bin/python benchmarks/models_bench.py --paired 5 # round-robin 2D comparison only

Writes ``benchmarks/out/models_bench.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2
ITERATIONS = 5
OUT = Path(__file__).resolve().parent / "out" / "models_bench.json"

# case -> (kind, builder kwargs, input shape with batch, units per forward, unit name, warmup, iterations)
CASES: dict[str, dict] = {
    "covidnet-ct2-l": {"model": "covidnet-ct2-l", "input": (4, 3, 512, 512), "units": 4, "unit": "slice"},
    "covidnet-ct2-s": {"model": "covidnet-ct2-s", "input": (4, 3, 512, 512), "units": 4, "unit": "slice"},
    "ai-corona": {"model": "ai-corona", "input": (1, 4, 3, 512, 512), "units": 4, "unit": "slice"},
    "covidnet-3d": {
        "model": "covidnet-3d",
        "input": (1, 1, 64, 384, 384),
        "units": 1,
        "unit": "scan",
        "warmup": 0,
        "iters": 2,
    },
    "covidctnet-denoiser": {
        "model": "covidctnet-denoiser",
        "input": (4, 1, 240, 240),
        "units": 4,
        "unit": "slice",
    },
    "covidctnet-classifier": {
        "model": "covidctnet-classifier",
        "input": (1, 1, 50, 240, 240),
        "units": 1,
        "unit": "scan",
    },
    "monai-densenet121-2d": {"monai": "DenseNet121", "input": (4, 3, 512, 512), "units": 4, "unit": "slice"},
    "monai-efficientnet-b0": {
        "monai": "efficientnet-b0",
        "input": (4, 3, 512, 512),
        "units": 4,
        "unit": "slice",
    },
}
CHANNELS_LAST = {
    "covidnet-ct2-l",
    "covidnet-ct2-s",
    "ai-corona",
    "monai-densenet121-2d",
    "monai-efficientnet-b0",
    "covidctnet-denoiser",
}
FUSABLE = {"covidnet-ct2-l", "covidnet-ct2-s"}
QUICK_INPUTS = {
    "covidnet-ct2-l": (2, 3, 64, 64),
    "covidnet-ct2-s": (2, 3, 64, 64),
    "ai-corona": (1, 2, 3, 64, 64),
    "covidnet-3d": (1, 1, 32, 64, 64),
    "covidctnet-denoiser": (2, 1, 32, 32),
    "covidctnet-classifier": (1, 1, 44, 48, 48),
    "monai-densenet121-2d": (2, 3, 64, 64),
    "monai-efficientnet-b0": (2, 3, 64, 64),
}


def _build(case: dict, shape: tuple[int, ...]):
    import torch

    if "monai" in case:
        from monai.networks.nets import DenseNet121, EfficientNetBN

        if case["monai"] == "DenseNet121":
            return DenseNet121(spatial_dims=2, in_channels=3, out_channels=3)
        return EfficientNetBN(
            "efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3, num_classes=3
        )
    from covidct.models import create_model

    overrides = {}
    if case["model"] in ("covidnet-3d", "covidctnet-classifier"):
        overrides["input_shape"] = shape[1:]
    torch.manual_seed(0)
    return create_model(case["model"], **overrides)


def run_one(name: str, quick: bool, channels_last: bool, fused: bool = False) -> dict:
    """Time one case in this process: median/min seconds per forward, units/s, peak RSS (MiB)."""
    import torch

    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)  # untrained eval-mode nets can underflow to denormals (10-100x slower)
    case = CASES[name]
    shape = QUICK_INPUTS[name] if quick else tuple(case["input"])
    model = _build(case, shape).eval()
    x = torch.rand(shape)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if x.ndim == 4:  # ai-corona (5D) converts its flattened slices itself
            x = x.contiguous(memory_format=torch.channels_last)
    if fused:
        from covidct.models.optimize import fuse_conv_bn

        model = fuse_conv_bn(model)
    warmup = 1 if quick else case.get("warmup", 1)
    iters = 1 if quick else case.get("iters", ITERATIONS)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    units = case["units"] if not quick else shape[0] * (shape[1] if name == "ai-corona" else 1)
    return {
        "case": name,
        "channels_last": channels_last,
        "fused_bn": fused,
        "input": list(shape),
        "warmup": warmup,
        "iterations": iters,
        "seconds_per_forward_median": round(seconds, 4),
        "seconds_per_forward_min": round(min(times), 4),
        "unit": case["unit"],
        f"{case['unit']}s_per_second_median": round(units / seconds, 3),
        f"{case['unit']}s_per_second_best": round(units / min(times), 3),
        "seconds_per_unit": round(seconds / units, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


PAIRED = ("covidnet-ct2-l", "covidnet-ct2-s", "ai-corona", "monai-densenet121-2d", "monai-efficientnet-b0")


def run_paired(quick: bool, rounds: int) -> dict:
    """Round-robin timing of the 2D slice models in one process (channels_last, 4 slices at 512 px).

    Every round times each model once, so background load hits all of them alike; the per-round
    ratio to each reference is robust to load swings where separate runs are not.
    """
    import torch

    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    models, inputs = {}, {}
    for name in PAIRED:
        shape = QUICK_INPUTS[name] if quick else tuple(CASES[name]["input"])
        models[name] = _build(CASES[name], shape).eval().to(memory_format=torch.channels_last)
        x = torch.rand(shape)
        inputs[name] = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
    per_slice: dict[str, list[float]] = {name: [] for name in PAIRED}
    with torch.inference_mode():
        for name in PAIRED:  # warm-up
            models[name](inputs[name])
        for _ in range(rounds):
            for name in PAIRED:
                start = time.perf_counter()
                models[name](inputs[name])
                units = inputs[name].shape[0] * (inputs[name].shape[1] if inputs[name].ndim == 5 else 1)
                per_slice[name].append((time.perf_counter() - start) / units)
    refs = ("monai-densenet121-2d", "monai-efficientnet-b0")
    return {
        "rounds": rounds,
        "median_seconds_per_slice": {n: round(statistics.median(v), 4) for n, v in per_slice.items()},
        "median_ratio_per_round": {
            n: {
                f"x_{r}": round(
                    statistics.median(a / b for a, b in zip(per_slice[n], per_slice[r], strict=True)), 3
                )
                for r in refs
            }
            for n in PAIRED
        },
    }


def _child(name: str, quick: bool, channels_last: bool, fused: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", name] + (["--quick"] if quick else [])
    cmd += ["--channels-last"] if channels_last else []
    cmd += ["--fuse"] if fused else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"case": name, "channels_last": channels_last, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs (smoke test)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fuse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only the round-robin 2D comparison, ROUNDS rounds (writes *_paired.json)",
    )
    args = parser.parse_args()
    if args.paired:
        report = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "quick": args.quick,
            **run_paired(args.quick, args.paired),
        }
        out = args.out.with_name(args.out.stem + "_paired.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.quick, args.channels_last, args.fuse)))
        return
    results = []
    for name in args.cases:
        variants = [(False, False)] + ([(True, False)] if name in CHANNELS_LAST else [])
        variants += [(True, True)] if name in FUSABLE else []
        for cl, fused in variants:
            row = _child(name, args.quick, cl, fused)
            results.append(row)
            print(json.dumps(row), flush=True)
    best = {}
    for r in results:
        if "seconds_per_unit" in r and (r["case"] not in best or r["seconds_per_unit"] < best[r["case"]]):
            best[r["case"]] = r["seconds_per_unit"]
    refs = {k: best.get(k) for k in ("monai-densenet121-2d", "monai-efficientnet-b0")}
    ratios = {
        name: {f"x_{ref}": round(sec / ref_sec, 3) for ref, ref_sec in refs.items() if ref_sec}
        for name, sec in best.items()
        if CASES[name]["unit"] == "slice"
    }
    report = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch threads {THREADS}",
        "python": platform.python_version(),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
        "best_seconds_per_unit": best,
        "time_per_slice_ratio_vs_reference": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
