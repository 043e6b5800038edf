"""`covidct import-weights`: released weights (another framework's file) -> a covidct checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from covidct.cli.app import command


@command(
    "import-weights", help="Convert released weights (e.g. CovidCTNet's Keras .h5) to a covidct checkpoint."
)
def import_weights_cmd(
    importer: str = typer.Argument(
        ..., help="Released model, e.g. covidctnet-classifier (--list shows all)."
    ),
    source: Path = typer.Argument(None, help="The released weights file."),
    out: Path = typer.Option(None, "--out", "-o", help="Checkpoint to write (.ckpt)."),
    list_all: bool = typer.Option(False, "--list", help="List the importers and exit."),
) -> None:
    from covidct.errors import ConfigError
    from covidct.models import load_checkpoint
    from covidct.models.importers import import_weights, list_importers

    if list_all:
        for item in list_importers():
            typer.echo(f"{item.name}\t{item.file_format}\t{item.description}")
        return
    if source is None or out is None:
        raise ConfigError(
            "Give the released weights file and --out FILE.ckpt, e.g. covidct import-weights "
            "covidctnet-classifier weight_cnn_CovidCtNet_v2_final.h5 --out covidctnet.ckpt"
        )
    path = import_weights(importer, source, out)
    checkpoint = load_checkpoint(path)
    typer.echo(
        json.dumps(
            {
                "checkpoint": str(path),
                "model": checkpoint.model_name,
                "classes": list(checkpoint.class_names),
                "recipe": checkpoint.recipe["name"],
                "source_sha256": checkpoint.provenance["imported_from"]["sha256"],
            }
        )
    )
