"""`covidct cohort`: what a cohort holds (cases, patients, classes, sources, missing files)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from covidct.cli.app import command

stdout = Console()


def _counts_table(title: str, groups: dict) -> Table:
    table = Table(title=title)
    for name in ("group", "cases", "patients"):
        table.add_column(name, justify="left" if name == "group" else "right")
    for group, count in groups.items():
        table.add_row(group, f"{count['cases']:,}", f"{count['patients']:,}")
    return table


def _print_summary(summary: dict, notes: list[str]) -> None:
    stdout.print(f"[bold]{summary['path']}[/] ({summary['kind']})", highlight=False)
    stdout.print(f"cases: {summary['cases']:,}   patients: {summary['patients']:,}")
    stdout.print(_counts_table("per class", summary["by_class"]))
    stdout.print(_counts_table("per source", summary["by_source"]))
    if len(summary["by_split"]) > 1 or "(none)" not in summary["by_split"]:
        stdout.print(_counts_table("per split", summary["by_split"]))
    if summary["with_metadata"]:
        stdout.print(f"records with a metadata row: {summary['with_metadata']:,} of {summary['cases']:,}")
    two = summary["patients_with_two_classes"]
    if two:
        stdout.print(f"[yellow]patients with more than one class: {len(two)} (e.g. {', '.join(two[:5])})[/]")
    if summary["missing_files"] is None:
        stdout.print("files: not checked (--no-check-files)")
    elif summary["missing_files"] == 0:
        stdout.print("files: all present")
    else:
        stdout.print(f"[yellow]missing files: {summary['missing_files']:,}[/]", highlight=False)
        for path in summary["missing_examples"]:
            stdout.print(f"  {path}", highlight=False)
        stdout.print(summary["missing_advice"], highlight=False)
    for note in notes:
        stdout.print(f"[yellow]note:[/] {note}", highlight=False)


@command("cohort", help="Summarise a cohort: cases, patients, per class / source, missing image files.")
def cohort(
    path: Path = typer.Argument(
        ..., help="COVIDx split .txt, manifest .csv, or a folder of class folders (images or DICOM studies)."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Folder of a COVIDx split's images (default: the split file's folder)."
    ),
    metadata: Path | None = typer.Option(
        None, "--metadata", help="COVIDx metadata.csv (default: the one next to the split file, if any)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    check_files: bool = typer.Option(True, "--check-files/--no-check-files", help="Look for missing files."),
) -> None:
    from covidct.io.cohort import read_cohort
    from covidct.io.cohort_summary import summarize_cohort

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_cohort(path, image_root=images, metadata=metadata)
    notes = [str(w.message) for w in caught]
    summary = summarize_cohort(records, path=path, check_files=check_files).to_dict()
    summary["notes"] = notes
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_summary(summary, notes)
