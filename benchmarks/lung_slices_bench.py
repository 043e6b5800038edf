"""Does scoring only lung slices change the patient-level result of the shared real studies?

For each checkpoint and each real study (COVID-CT-MD P001 / cap001 / normal001 and the LIDC-IDRI
series of ../shared/data), the slice model scores every slice once; the patient probabilities are
then aggregated over all slices (today) and over the lung slices only (`lung_slice_mask` of
`segment_lungs`), for the ``mean`` and ``max`` rules. Writes benchmarks/out/lung_slices_bench.json.

Usage: python benchmarks/lung_slices_bench.py --checkpoint CKPT [--checkpoint CKPT ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COVIDCT_SHARED_DATA", ROOT.parent / "shared" / "data"))
STUDIES = (
    "covid-ct-md/COVID-19/P001",
    "covid-ct-md/CAP/cap001",
    "covid-ct-md/Normal/normal001",
    "lidc-idri-small/LIDC-IDRI-0001",
    "lidc-idri-small/LIDC-IDRI-0002",
    "lidc-idri-small/LIDC-IDRI-0003",
)
OUT = ROOT / "benchmarks" / "out" / "lung_slices_bench.json"


def compare(slice_probs: np.ndarray, lung: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Labels and probabilities aggregated over all slices vs over the lung slices."""
    from covidct.models.inference import _aggregate

    out: dict[str, Any] = {}
    for rule in ("mean", "max"):
        every = _aggregate(slice_probs, rule)
        lungs_only = _aggregate(slice_probs[lung], rule)
        out[rule] = {
            "label_all": classes[int(np.argmax(every))],
            "label_lung": classes[int(np.argmax(lungs_only))],
            "probs_all": [round(float(p), 4) for p in every],
            "probs_lung": [round(float(p), 4) for p in lungs_only],
            "max_abs_diff": round(float(np.abs(every - lungs_only).max()), 4),
        }
        out[rule]["unchanged"] = out[rule]["label_all"] == out[rule]["label_lung"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", action="append", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from covidct.io import read_volume
    from covidct.models import load_checkpoint
    from covidct.models.inference import predict_volume
    from covidct.quant.lung_slices import MIN_LUNG_AREA_MM2, lung_slice_mask
    from covidct.quant.lungs import segment_lungs

    volumes = {name: read_volume(SHARED / name) for name in STUDIES}
    lungs = {}
    for name, volume in volumes.items():
        t0 = time.perf_counter()
        mask = lung_slice_mask(segment_lungs(volume), volume.spacing)
        lungs[name] = (mask, time.perf_counter() - t0)
    rows = []
    for path in args.checkpoint:
        checkpoint = load_checkpoint(path)
        for name, volume in volumes.items():
            mask, seg_s = lungs[name]
            pred = predict_volume(checkpoint, volume)
            row = {
                "checkpoint": str(path),
                "study": name,
                "slices": int(volume.num_slices),
                "lung_slices": int(mask.sum()),
                "segment_lungs_s": round(seg_s, 2),
                **compare(pred.slice_probs, mask, tuple(checkpoint.class_names)),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "min_lung_area_mm2": MIN_LUNG_AREA_MM2,
        "all_unchanged_mean": all(r["mean"]["unchanged"] for r in rows),
        "all_unchanged_max": all(r["max"]["unchanged"] for r in rows),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))


if __name__ == "__main__":
    main()
