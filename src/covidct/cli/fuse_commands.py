"""`covidct fuse fit`: fit the fused score (model + quantitative CT) on validation data, never on test."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from covidct.cli.app import app, guarded

fuse_app = typer.Typer(help="Fused score: model COVID-19 probability + quantitative CT involvement.",
                       no_args_is_help=True)
app.add_typer(fuse_app, name="fuse")


def fit_cmd(
    predictions: Path = typer.Argument(
        ..., help="Patient-level VALIDATION CSV: patient_id,label,prob_COVID-19,involvement_pct,split."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="The checkpoint whose probabilities the CSV holds."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Checkpoint to write: the same model + fusion weights."),
) -> None:
    """Fit the fusion weights by maximum likelihood and write them into a copy of the checkpoint."""
    from covidct.evaluation.fusion import FUSION_KEY, FusedScore, read_fusion_table
    from covidct.models.checkpoint import update_extra

    fused = FusedScore.fit(read_fusion_table(predictions))
    fused_dict = fused.to_dict()
    fused_dict["fitted_on"]["checkpoint"] = str(checkpoint)
    update_extra(checkpoint, out, {FUSION_KEY: fused_dict})
    typer.echo(json.dumps({"out": str(out), **fused_dict}, indent=2))


fuse_app.command("fit")(guarded(fit_cmd))
