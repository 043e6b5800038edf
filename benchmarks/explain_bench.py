"""Explanation benchmarks on CPU: time per slice per method, Grad-CAM per 3D scan, lung masks per
real scan, and a localisation check of the heatmaps against the Inf-Net infection masks.

    .venv/bin/python benchmarks/explain_bench.py [--size 96] [--n-infnet 48] [--n-critical 8]

Writes benchmarks/out/explain_bench.json. Without a trained checkpoint (``--checkpoint``) the model is
an UNTRAINED covidnet-ct2-s: its localisation numbers measure the harness, not a model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from covidct.explain.methods import compute_heatmap
from covidct.explain.sanity import curve_auc, deletion_insertion

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COVIDCT_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "out" / "explain_bench.json"
SLICE_METHODS = ("gradcam", "cam", "occlusion", "integrated-gradients", "critical-factors")
HEAT_THRESHOLD = 0.5
GAUSSIAN_SIGMA_FRACTION = 0.25
TIMING_SLICES = 3
THREADS = 2


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def slice_model(size: int, checkpoint: str | None):
    """(model, recipe, trained?) : a checkpoint's model or an untrained covidnet-ct2-s at ``size``."""
    from covidct.models import create_model, load_checkpoint
    from covidct.preprocessing import get_recipe, recipe_from_dict

    if checkpoint:
        ckpt = load_checkpoint(checkpoint)
        return ckpt.model.eval(), recipe_from_dict(ckpt.recipe), True
    torch.manual_seed(0)
    return (
        create_model("covidnet-ct2-s", input_size=size).eval(),
        get_recipe("covidnet-ct2", size=size),
        False,
    )


def infnet_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``n`` (grey uint8 image, bool infection mask) pairs from inf-net/test."""
    from PIL import Image

    root = SHARED / "inf-net" / "test"
    pairs = []
    for img_path in sorted((root / "Imgs").glob("*.jpg"))[:n]:
        gt_path = root / "GT" / (img_path.stem + ".png")
        if gt_path.is_file():
            img = np.asarray(Image.open(img_path).convert("L"))
            gt = np.asarray(Image.open(gt_path).convert("L")) > 127
            pairs.append((img, gt))
    return pairs


def to_image_space(heat: np.ndarray, box: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    """A model-size 2D map back into an image of ``shape`` through the recipe geometry's inverse."""
    from covidct.preprocessing.geometry import slicewise

    geometry = slicewise((1, *shape), (1, *heat.shape), [0], [tuple(int(v) for v in box)])
    return geometry.to_volume(heat[None])[0]


def localisation(heat: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pointing-game hit (argmax in the mask), IoU and Dice of heat >= 0.5 against the mask."""
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    flagged = heat >= HEAT_THRESHOLD
    inter, union = np.count_nonzero(flagged & gt), np.count_nonzero(flagged | gt)
    return {
        "hit": float(gt[peak]),
        "iou": inter / union if union else 0.0,
        "dice": 2 * inter / (flagged.sum() + gt.sum()) if (flagged.sum() + gt.sum()) else 0.0,
    }


def gaussian_baseline(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sy, sx = (GAUSSIAN_SIGMA_FRACTION * s for s in shape)
    return np.exp(-(((yy - shape[0] / 2) / sy) ** 2 + ((xx - shape[1] / 2) / sx) ** 2) / 2).astype(np.float32)


def evaluate_infnet(model, recipe, n: int, n_critical: int, methods: tuple[str, ...] = SLICE_METHODS) -> dict:
    """Per method of ``methods``: mean pointing-game hit rate, IoU, Dice (image space) and deletion AUC
    (model space); the centred Gaussian baseline always."""
    pairs = infnet_pairs(n)
    if not pairs:
        return {"skipped": f"{SHARED / 'inf-net'} is absent"}
    rows: dict[str, list[dict]] = {m: [] for m in (*methods, "gaussian-baseline")}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    for k, (img, gt) in enumerate(pairs):
        grey = recipe.to_uint8(img.astype(np.float32), is_hu=False)
        box = recipe.body_box(recipe.focus(grey))  # the box training used (LungFocus first)
        x = torch.as_tensor(recipe.prepare_image(img.astype(np.float32), is_hu=False, box=box))[None]
        target = 1 + int(np.argmax(model(x).softmax(1)[0, 1:].detach().numpy()))  # a disease class
        target = list(model.class_names).index("COVID-19") if "COVID-19" in model.class_names else target
        heats = {}
        for method in methods:
            if method == "critical-factors" and k >= n_critical:
                continue
            res, dt = _timed(compute_heatmap, method, model, x, target)
            seconds[method] += dt
            heats[method] = res.heatmap[0]
        heats["gaussian-baseline"] = gaussian_baseline(x.shape[-2:])
        for method, heat in heats.items():
            row = localisation(to_image_space(heat, box, img.shape), gt)
            deletion, _ = deletion_insertion(model, x, target, heat)
            row["deletion_auc"] = curve_auc(deletion)
            rows[method].append(row)
    summary = {}
    for method, items in rows.items():
        if items:
            summary[method] = {key: round(float(np.mean([r[key] for r in items])), 4) for key in items[0]}
            summary[method]["n"] = len(items)
    return {"images": len(pairs), "methods": summary}


def time_slice_methods(model, recipe, n_critical: int) -> dict:
    """Seconds per slice of every method on the model's input size (TIMING_SLICES slices, one at a time)."""
    from covidct.synthetic import make_phantom

    size = recipe.size
    vol = make_phantom("COVID-19", shape=(24, 2 * size, 2 * size), spacing=(5.0, 0.8, 0.8), seed=0).volume
    x = torch.as_tensor(recipe.prepare_volume(vol).array)[10 : 10 + TIMING_SLICES]
    out = {}
    for method in SLICE_METHODS:
        items = x[:1] if method == "critical-factors" else x
        times = [_timed(compute_heatmap, method, model, items[i : i + 1])[1] for i in range(len(items))]
        out[method] = round(float(np.median(times)), 3)
    return out


def time_3d_gradcam() -> dict:
    from covidct.models import create_model

    shape = (1, 32, 96, 96)
    model = create_model("covidnet-3d", input_shape=shape).eval()
    x = torch.rand((1, *shape))
    _, dt = _timed(compute_heatmap, "gradcam", model, x)
    return {
        "model": "covidnet-3d (DenseNet-264, paper blocks)",
        "input": list(shape),
        "seconds": round(dt, 2),
    }


def time_lungs() -> dict:
    from covidct.io import read_volume
    from covidct.quant.lungs import lung_volume_ml, segment_lungs

    out = {}
    for series in ("COVID-19/P001", "CAP/cap001", "Normal/normal001"):
        path = SHARED / "covid-ct-md" / series
        if not path.is_dir():
            continue
        vol = read_volume(path)
        mask, dt = _timed(segment_lungs, vol)
        total = lung_volume_ml(mask, vol.spacing)
        out[series] = {
            "shape": list(vol.shape),
            "seconds": round(dt, 2),
            "lung_ml": round(total, 1),
            "right_share": round(lung_volume_ml(mask, vol.spacing, 1) / total, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--n-infnet", type=int, default=48)
    parser.add_argument("--n-critical", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], help="sections to skip: slices 3d lungs infnet")
    parser.add_argument("--methods", nargs="*", default=list(SLICE_METHODS), choices=SLICE_METHODS,
                        help="heatmap methods scored on the Inf-Net masks (default: all)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON written here (default {OUT})")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    model, recipe, trained = slice_model(args.size, args.checkpoint)
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {THREADS}",
        "model": "checkpoint " + args.checkpoint
        if trained
        else f"UNTRAINED covidnet-ct2-s at {args.size} px",
    }
    if "slices" not in args.skip:
        result["seconds_per_slice"] = time_slice_methods(model, recipe, args.n_critical)
    if "3d" not in args.skip:
        result["gradcam_3d_per_scan"] = time_3d_gradcam()
    if "lungs" not in args.skip:
        result["lung_segmentation"] = time_lungs()
    if "infnet" not in args.skip:
        result["infnet_localisation"] = evaluate_infnet(model, recipe, args.n_infnet, args.n_critical,
                                                        tuple(args.methods))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
