"""Peak memory of read_volume on small inputs that decode to (just under) the default volume budget.

Issue 15: no input under 10 MB may make the process use more than ~2 GB. The volume budget
(1 GiB of float32, `covidct.io.limits.ReadLimits`) bounds what a reader allocates; this measures the
peak resident memory of a fresh process reading the worst in-budget inputs, and one just over it:

- a .nii.gz of 640^3 int16 (262 M voxels, 1000 MiB as float32) that compresses to under 10 MB;
- a folder of 4 PNG slices of 8000 x 8000 (256 M voxels) of under 10 MB in total;
- the same NIfTI with 656 slices (just over 1 GiB as float32): refused from the header.

Usage: python benchmarks/bench_reader_budget.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

READ_AND_REPORT = """
import resource, sys, time
from covidct.errors import CovidCTError
from covidct.io import read_volume
t = time.perf_counter()
try:
    v = read_volume(sys.argv[1]); what = f"read {list(v.shape)}"
except CovidCTError as exc:
    what = f"refused: {type(exc).__name__}: {str(exc)[:160]}"
print(what, round(time.perf_counter() - t, 2), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _nifti(path: Path, shape: tuple[int, int, int]) -> Path:
    import nibabel as nib

    data = np.zeros(shape, np.int16)
    data[::7, ::5, ::3] = 40  # a little structure; still compresses far below 10 MB
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _png_folder(folder: Path, n: int, size: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for k in range(n):
        img = np.zeros((size, size), np.uint8)
        img[k::97, :] = 200
        Image.fromarray(img).save(folder / f"{k}.png", optimize=True)
    return folder


def measure(path: Path) -> dict[str, object]:
    size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir()))
    out = subprocess.run([sys.executable, "-c", READ_AND_REPORT, str(path)], capture_output=True, text=True,
                         check=True).stdout.strip()
    what, seconds, peak_mb = out.rsplit(" ", 2)
    return {"input": path.name, "input_mb": round(size / 1e6, 2), "result": what, "seconds": float(seconds),
            "peak_rss_mb": int(peak_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for maker in (
            lambda: _nifti(root / "budget.nii.gz", (640, 640, 640)),
            lambda: _png_folder(root / "pngs", 4, 8000),
            lambda: _nifti(root / "over.nii.gz", (656, 640, 640)),
        ):
            start = time.perf_counter()
            path = maker()
            row = measure(path)
            row["build_seconds"] = round(time.perf_counter() - start - row["seconds"], 1)  # type: ignore[operator]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
