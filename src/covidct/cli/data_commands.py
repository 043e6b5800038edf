"""Data sub-commands (registered on import): inspect, convert (io); synth, preprocess, slices follow."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from covidct.cli.app import command

stdout = Console()


# ---------------------------------------------------------------- io: inspect, convert
def _summary_table(summary: dict) -> Table:
    """Rich table of a Volume.summary() (files and warnings shortened)."""
    table = Table(title=f"covidct inspect: {summary['source']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key == "files":
            files = list(value)
            value = f"{len(files)} files: {files[0]} ... {files[-1]}" if len(files) > 2 else ", ".join(files)
        elif key == "warnings":
            value = "\n".join(value) if value else "none"
        table.add_row(key, str(value))
    return table


@command("inspect", help="Read a DICOM folder/zip/file, NIfTI or PNG/JPG slices and describe the volume.")
def inspect(
    path: Path = typer.Argument(..., help="DICOM folder/zip/file, .nii/.nii.gz, or PNG/JPG slice(s)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (Volume.summary())."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read instead of the default."),
    allow_modality: bool = typer.Option(False, "--allow-modality", help="Read non-CT DICOM too."),
) -> None:
    from covidct.io import read_volume

    volume = read_volume(path, series_uid=series, allow_modality=allow_modality)
    summary = volume.summary()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        stdout.print(_summary_table(summary))


@command("convert", help="Convert a DICOM series (or any readable volume) to NIfTI.")
def convert(
    path: Path = typer.Argument(..., help="DICOM folder/zip/file, NIfTI, or PNG/JPG slices."),
    out: Path = typer.Argument(..., help="Output .nii or .nii.gz file."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read instead of the default."),
    allow_modality: bool = typer.Option(False, "--allow-modality", help="Read non-CT DICOM too."),
) -> None:
    from covidct.errors import ConfigError
    from covidct.io import read_volume, write_nifti
    from covidct.io.nifti import is_nifti

    if not is_nifti(out):
        raise ConfigError(f"Output {out} must end in .nii or .nii.gz.")
    volume = read_volume(path, series_uid=series, allow_modality=allow_modality)
    write_nifti(volume, out)
    for warning in volume.meta.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {out}: {volume.num_slices} slices, shape {list(volume.shape)}, spacing {volume.spacing} mm")


# ---------------------------------------------------------------- preprocessing commands go below
