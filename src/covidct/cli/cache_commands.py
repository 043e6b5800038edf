"""`covidct cache`: decode a COVIDx-style split once into a memory-mapped slice cache for training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from covidct.cli.app import command, console

PROGRESS_EVERY = 1000
"""Print a progress line every this many images."""


@command("cache")
def cache_command(
    split: Annotated[
        Path, typer.Argument(help="COVIDx split file (e.g. train_COVIDx_CT-2A.txt) or manifest CSV.")
    ],
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder of the split's images (default: the split's folder)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Cache folder to write (pixels.u8 + index.json).")
    ] = Path("cache"),
) -> None:
    """Decode every slice of SPLIT once into a uint8 memory-mapped cache; train with
    `--set data.slice_cache=CACHE` (research use only)."""
    from covidct.io.cohort import read_cohort
    from covidct.io.slice_cache import PIXELS_FILE, write_slice_cache

    records = read_cohort(split, image_root=images) if images is not None else read_cohort(split)
    start = time.perf_counter()

    def progress(done: int) -> None:
        if done % PROGRESS_EVERY == 0 or done == len(records):
            rate = done / max(time.perf_counter() - start, 1e-9)
            console.print(f"{done}/{len(records)} images ({rate:.0f}/s)", highlight=False)

    write_slice_cache(records, out, source=str(split), progress=progress)
    size_mb = (out / PIXELS_FILE).stat().st_size / 2**20
    typer.echo(f"wrote {out}: {len(records)} images, {size_mb:.1f} MiB, {time.perf_counter() - start:.1f} s")
