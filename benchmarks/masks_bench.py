"""Cost of writing a study's masks (NIfTI lung + lesion labels, DICOM SEG) against its peer in the same run,
the quantitative CT stage that produced them, on COVID-CT-MD P001 (148 slices, JPEG lossless).

    .venv/bin/python benchmarks/masks_bench.py [--repeats 3]

Prints one JSON line per repeat and a summary: seconds per stage and the ratio masks / quantify.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

P001 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covid-ct-md" / "COVID-19" / "P001"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--study", type=Path, default=P001)
    args = parser.parse_args()
    if not args.study.is_dir():
        print(f"study {args.study} is absent (../shared/data); nothing measured", file=sys.stderr)
        return 1
    from covidct.io.masks import build_segmentation
    from covidct.service.masks import write_study_masks
    from covidct.service.predictor import Predictor

    predictor = Predictor([])
    rows = []
    for run in range(args.repeats):
        result = predictor.predict(args.study)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            masks = write_study_masks(result, Path(tmp))
            masks_s = time.perf_counter() - start
            sizes = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
        start = time.perf_counter()
        build_segmentation(result.volume, result.lung_labels, result.lesion_labels, result.source_headers)
        seg_s = time.perf_counter() - start
        row = {"run": run, "quantify_s": result.timings["quantify"], "read_s": result.timings["read"],
               "masks_s": round(masks_s, 3), "seg_build_s": round(seg_s, 3), "written": masks and sizes}
        rows.append(row)
        print(json.dumps(row))
    median = {k: statistics.median(r[k] for r in rows) for k in ("quantify_s", "masks_s", "seg_build_s")}
    ratio = round(median["masks_s"] / median["quantify_s"], 2)
    print(json.dumps({"median": median, "masks_over_quantify": ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
