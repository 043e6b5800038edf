"""`covidct models` (the registry with sizes), `covidct configs` (the shipped training configs) and
`covidct export` (ONNX, checked with onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from covidct.cli.app import command

GIGA = 1e9


def model_rows() -> list[dict]:
    """One dict per registered model: name, params, gmacs, gflops (= 2 x gmacs), input_shape, classes, recipe.

    Models are built on the ``meta`` device (no memory, no weights) and counted at their default input.
    """
    import torch

    from covidct.models import count_macs, count_params, create_model, list_models

    rows = []
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        macs = count_macs(model, model.input_shape)
        rows.append(
            {
                "name": name,
                "params": count_params(model),
                "gmacs": round(macs / GIGA, 3),
                "gflops": round(2 * macs / GIGA, 3),
                "input_shape": list(model.input_shape),
                "classes": list(model.class_names),
                "recipe": model.recipe_name,
                "unit": model.unit,
            }
        )
    return rows


@command("models")
def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List registered models with parameters, GMACs/GFLOPs at the default input, classes and recipe."""
    rows = model_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="covidct models (GFLOPs = 2 x GMACs, at the default input, batch 1)")
    for col in ("name", "params", "GMACs", "GFLOPs", "input", "classes", "recipe"):
        table.add_column(
            col, justify="right" if col in ("params", "GMACs", "GFLOPs") else "left", no_wrap=col == "name"
        )
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['params']:,}",
            f"{r['gmacs']:.2f}",
            f"{r['gflops']:.2f}",
            "x".join(map(str, r["input_shape"])),
            ", ".join(r["classes"]) or "-",
            r["recipe"],
        )
    Console().print(table)


def config_rows() -> list[dict]:
    """One dict per shipped training config: name, model, epochs and path (read from its YAML)."""
    import yaml

    from covidct.configs import config_path, list_configs

    rows = []
    for name in list_configs():
        path = config_path(name)
        raw = yaml.safe_load(path.read_text()) or {}
        model = raw.get("model", {})
        rows.append({"name": name, "model": model.get("name", "") if isinstance(model, dict) else str(model),
                     "epochs": raw.get("epochs"), "path": str(path)})
    return rows


@command("configs")
def configs_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the training configs shipped with covidct (use a name with `covidct train --config NAME`)."""
    rows = config_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="covidct configs (covidct train --config NAME)")
    for col in ("name", "model", "epochs"):
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        table.add_row(r["name"], r["model"], str(r["epochs"]))
    Console().print(table)


@command("export")
def export_command(
    model: str = typer.Argument(..., help="Registered model name, e.g. covidnet-ct2-s."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Checkpoint (.pt) of that model."),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="ONNX file to write."),
    size: int = typer.Option(0, "--size", help="In-plane size of the example input (0: the model default)."),
) -> None:
    """Export a checkpoint to ONNX and check it against PyTorch with onnxruntime (max abs diff < 1e-4)."""
    from covidct.errors import CheckpointError
    from covidct.models import load_checkpoint
    from covidct.models.export import DEFAULT_TOLERANCE, export_onnx

    ckpt = load_checkpoint(checkpoint, expected_model=model)
    shape = list(ckpt.model.input_shape)
    if size:
        shape[-2:] = [size, size]
    diff = export_onnx(ckpt.model, out, input_shape=shape)
    typer.echo(
        f"wrote {out} (input 1x{'x'.join(map(str, shape))}); max abs difference vs PyTorch: {diff:.3g}"
    )
    if not diff < DEFAULT_TOLERANCE:
        raise CheckpointError(
            f"ONNX output differs from PyTorch by {diff:.3g} (> {DEFAULT_TOLERANCE}); do not use {out}."
        )
