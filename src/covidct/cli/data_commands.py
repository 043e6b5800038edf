"""Data sub-commands (registered on import): inspect, convert (io); synth, preprocess, slices follow."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from covidct.cli.app import command
from covidct.jsonable import to_jsonable

stdout = Console()


# ---------------------------------------------------------------- io: inspect, convert
def _summary_table(summary: dict) -> Table:
    """Rich table of a Volume.summary() (files and warnings shortened)."""
    table = Table(title=f"covidct inspect: {summary['source']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
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
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID to read instead of the default."
    ),
    allow_modality: bool = typer.Option(False, "--allow-modality", help="Read non-CT DICOM too."),
) -> None:
    from covidct.io import read_volume

    volume = read_volume(path, series_uid=series, allow_modality=allow_modality)
    summary = volume.summary()
    if as_json:
        typer.echo(json.dumps(to_jsonable(summary), allow_nan=False))
    else:
        stdout.print(_summary_table(summary))


@command("convert", help="Convert a DICOM series (or any readable volume) to NIfTI.")
def convert(
    path: Path = typer.Argument(..., help="DICOM folder/zip/file, NIfTI, or PNG/JPG slices."),
    out: Path = typer.Argument(..., help="Output .nii or .nii.gz file."),
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID to read instead of the default."
    ),
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
    typer.echo(
        f"wrote {out}: {volume.num_slices} slices, shape {list(volume.shape)}, spacing {volume.spacing} mm"
    )


# ---------------------------------------------------------------- preprocessing commands go below


# ---------------------------------------------------------------- synth, preprocess, slices
def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_shape(text: str) -> tuple[int, int, int]:
    from covidct.errors import ConfigError

    try:
        shape = tuple(int(v) for v in _csv_list(text))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise ConfigError(f"--shape must be three integers z,y,x (e.g. 40,192,192), got {text!r}.")
    return shape  # type: ignore[return-value]


@command("synth", help="Write a synthetic CT cohort (phantoms) with a manifest CSV and lesion masks.")
def synth(
    out: Path = typer.Argument(..., help="Output folder (created)."),
    n: int = typer.Option(4, "--n", help="Patients per class."),
    classes: str = typer.Option("covid,cp,normal", "--classes", help="Comma-separated classes."),
    fmt: str = typer.Option("dicom", "--format", help="dicom (one series per patient) or nifti."),
    transfer_syntax: str = typer.Option(
        "explicit-le",
        "--transfer-syntax",
        help="DICOM transfer syntax: explicit-le, implicit-le, rle, jpeg-ls, jpeg2000.",
    ),
    shape: str = typer.Option("40,192,192", "--shape", help="Voxels z,y,x."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    from covidct.synthetic import make_cohort

    manifest = make_cohort(
        out,
        n_per_class=n,
        classes=tuple(_csv_list(classes)),
        seed=seed,
        shape=_parse_shape(shape),
        fmt=fmt,
        transfer_syntax=transfer_syntax,
    )
    typer.echo(f"wrote {manifest}")


def _parse_options(pairs: list[str]) -> dict:
    """``key=value`` strings -> dict; values parsed as JSON when they can be (numbers, lists)."""
    from covidct.errors import ConfigError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option must look like key=value (e.g. size=128), got {pair!r}.")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


@command("preprocess", help="Run a recipe on a scan; save the model input (.npy) and a PNG montage.")
def preprocess(
    path: Path = typer.Argument(..., help="DICOM folder/zip/file, NIfTI, or PNG/JPG slices."),
    recipe: str = typer.Option(..., "--recipe", help="covidnet-ct2, ai-corona, covidnet-3d or covidctnet."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    option: list[str] = typer.Option([], "--option", "-o", help="Recipe parameter key=value (repeatable)."),
) -> None:
    import numpy as np
    from PIL import Image

    from covidct.io import read_volume
    from covidct.preprocessing import get_recipe, montage

    rec = get_recipe(recipe, **_parse_options(option))
    volume = read_volume(path)
    x = rec.prepare_volume(volume).array
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(path).name.split('.')[0] or 'volume'}_{rec.name}"
    np.save(out / f"{stem}.npy", x)
    Image.fromarray(montage(x)).save(out / f"{stem}.png")
    (out / f"{stem}.json").write_text(json.dumps(rec.to_dict(), indent=2))
    typer.echo(f"wrote {out / stem}.npy: shape {list(x.shape)}, range [{x.min():.3f}, {x.max():.3f}]")


def _read_labels(labels: Path, root: Path) -> list[dict]:
    """Rows of a labels CSV (``path,label[,patient_id][,split]``) with ``path`` resolved."""
    import csv

    from covidct.classes import canonical_class
    from covidct.errors import CohortError

    if not labels.is_file():
        raise CohortError(f"Labels CSV {labels} does not exist.")
    with open(labels, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise CohortError(f"Labels CSV {labels} needs a header with at least 'path,label' and one row.")
    for row in rows:
        rel = Path(row["path"])
        candidates = [rel] if rel.is_absolute() else [root / rel, labels.parent / rel, root / rel.name]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise CohortError(f"Study {row['path']!r} in {labels} is not under {root} nor next to the CSV.")
        row["path"], row["label"] = found, canonical_class(row["label"])
        row["patient_id"] = row.get("patient_id") or found.name.split(".")[0]
    return rows


@command("slices", help="Turn labelled CT studies into lung-windowed 8-bit PNG slices + COVIDx split files.")
def slices(
    path: Path = typer.Argument(..., help="Folder of the studies (labels CSV paths are relative to it)."),
    labels: Path = typer.Option(..., "--labels", help="CSV with path,label[,patient_id][,split]."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/ and <split>_COVIDx_CT.txt."),
    every: int = typer.Option(1, "--every", help="Keep every k-th slice."),
) -> None:
    from PIL import Image

    from covidct.classes import CLASSES_3, class_index
    from covidct.io import read_volume
    from covidct.preprocessing import BodyBox, LungWindow

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for row in _read_labels(labels, path):
        volume = read_volume(row["path"])
        grey = volume.array if not volume.is_hu else LungWindow(round_to_uint8=True)(volume.array)
        for k in range(0, volume.num_slices, max(every, 1)):
            img = grey[k].clip(0, 255).astype("uint8")
            name = f"{row['patient_id']}_{k:04d}.png"
            Image.fromarray(img).save(images / name)
            x0, y0, x1, y1 = BodyBox()(img)
            split = (row.get("split") or "all").strip()
            lines.setdefault(split, []).append(
                f"{name} {class_index(row['label'], CLASSES_3)} {x0} {y0} {x1} {y1}"
            )
    for split, split_lines in lines.items():
        (out / f"{split}_COVIDx_CT.txt").write_text("\n".join(split_lines) + "\n")
        typer.echo(f"wrote {out / f'{split}_COVIDx_CT.txt'}: {len(split_lines)} slices")
