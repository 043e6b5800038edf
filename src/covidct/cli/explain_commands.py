"""`covidct explain`: heatmaps, lung quantification and sanity checks for one scan (registered on import)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from covidct.cli.app import command

DEFAULT_OUT = Path("explain-out")
METHOD_HELP = "gradcam | cam | occlusion | critical-factors | residual | integrated-gradients"


@command("explain")
def explain_command(
    path: Path = typer.Argument(..., help="Scan: DICOM folder/zip/file, NIfTI, or PNG/JPG slice(s)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Model checkpoint (.pt)."),
    method: str = typer.Option("gradcam", "--method", "-m", help=METHOD_HELP),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Output folder."),
    slices: str = typer.Option("auto", "--slices", help="auto | all | comma-separated 0-based indices."),
    target: str | None = typer.Option(
        None, "--target", help="Class name or index to explain (default: predicted)."
    ),
    sanity: bool = typer.Option(
        True, "--sanity/--no-sanity", help="Randomisation + deletion/insertion checks."
    ),
    series_uid: str | None = typer.Option(
        None, "--series-uid", help="SeriesInstanceUID when PATH holds several."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (CUDA when available) for the "
                               "model pass; the heatmap methods run on CPU."),
) -> None:
    """Explain a prediction on a scan: overlays, montage, HTML viewer, NIfTI heatmap, JSON summary.

    Research use only, not for diagnosis.
    """
    from covidct.explain import explain, get_method, write_explanation
    from covidct.io import read_volume
    from covidct.models import load_checkpoint
    from covidct.models.device import resolve_device

    get_method(method)  # unknown names fail before any file is read
    run_on = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    ckpt.model.to(run_on)
    volume = read_volume(path, series_uid=series_uid)
    exp = explain(ckpt, volume, method=method, slices=slices, target=target, sanity=sanity)
    files = write_explanation(exp, volume, out)
    summary = exp.summary()
    typer.echo(
        json.dumps(
            {
                "files": files,
                "class_explained": summary["class_explained"],
                "probability": summary["probability"],
                "description": summary["description"],
                "sanity": summary["sanity"],
                "device": str(run_on),
            },
            indent=2,
        )
    )
    Console(stderr=True).print(f"wrote {files['html']}", highlight=False)
