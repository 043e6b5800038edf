"""`covidct train`: run the one training engine from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from covidct.cli.app import command, console


@command("train")
def train_command(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Shipped config name (covidnet-ct2-s; `covidct configs` "
                          "lists them) or the path of a YAML file.")
    ],
    data: Annotated[
        str | None, typer.Option("--data", help="Manifest CSV, COVIDx split file or class folders.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: out_dir of the config).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/last.ckpt.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set optimizer.lr=1e-3.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Number of epochs.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto.")] = None,
) -> None:
    """Train a model (research use only). Works under `torchrun --nproc_per_node N -m covidct train ...`."""
    from covidct.training import TrainConfig, train
    from covidct.training.config import parse_set_options

    overrides = parse_set_options(set_)
    for key, value in (
        ("data.path", data),
        ("out_dir", str(out) if out else None),
        ("epochs", epochs),
        ("device", device),
    ):
        if value is not None:
            overrides[key] = value
    cfg = TrainConfig.from_yaml(config, **overrides)
    result = train(cfg, resume=resume)
    summary = {
        "out_dir": result.out_dir,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        result.metric: result.best_metric,
        "stopped_early": result.stopped_early,
        "best_checkpoint": result.best_checkpoint,
        "final_metrics": result.final_metrics,
        "wall_time_s": result.wall_time_s,
    }
    console.print(json.dumps(summary, indent=2), highlight=False, markup=False)
