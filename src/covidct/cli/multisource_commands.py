"""`covidct build-cohort` (every real source -> one manifest) and `covidct loso` (leave-one-source-out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from covidct.cli.app import command, console


@command("build-cohort")
def build_cohort_command(
    root: Annotated[
        Path, typer.Argument(help="Data root holding ucsd-covid-ct/, covid-ct-md/, inf-net/, ...")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest CSV to write.")] = Path("cohort.csv"),
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Only these sources (repeat); default all.")
    ] = None,
) -> None:
    """Build the binary (COVID-19 vs Non-COVID) multi-source cohort manifest: one row per slice."""
    from covidct.data.cohort_builder import (
        SOURCES_WITHOUT_PATIENT_IDS,
        build_cohort,
        cohort_counts,
        write_cohort,
    )

    rows = build_cohort(root, sources=source)
    path = write_cohort(rows, out)
    counts = cohort_counts(rows)
    console.print(
        json.dumps({"manifest": str(path), "rows": len(rows), "per_source": counts}, indent=2),
        highlight=False,
        markup=False,
    )
    caveat = [s for s in SOURCES_WITHOUT_PATIENT_IDS if s in counts]
    if caveat:
        console.print(
            f"note: {', '.join(caveat)} have no patient ids; each image counts as its own patient "
            "(patient leakage possible within these sources).",
            highlight=False,
            markup=False,
        )
