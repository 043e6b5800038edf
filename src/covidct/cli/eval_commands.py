"""Sub-commands `evaluate` and `compare` (registered on import)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from covidct.cli.app import command
from covidct.errors import EvaluationError

console = Console()
DEFAULT_N_BOOT = 10_000


def predict_manifest(checkpoint: Path, manifest: Path, out_csv: Path, *, batch_size: int = 16) -> Path:
    """Run a checkpoint on every case of a cohort manifest and write a predictions CSV.

    Uses `covidct.models.load_checkpoint`, `covidct.models.inference.predict_volume` and
    `covidct.io.read_cohort` / `read_volume`, imported here so that
    `covidct evaluate --predictions` needs no torch.
    """
    from covidct.evaluation.predictions import table_from_rows, write_predictions
    from covidct.io import read_cohort, read_volume
    from covidct.models import load_checkpoint
    from covidct.models.inference import predict_volume

    ckpt = load_checkpoint(checkpoint)
    records = read_cohort(manifest)
    if not records:
        raise EvaluationError(f"Manifest {manifest} lists no cases; nothing to evaluate.")
    rows, columns = [], None
    for rec in records:
        pred = predict_volume(ckpt, read_volume(rec.path), batch_size=batch_size)
        probs = {f"prob_{c}": f"{p:.6f}" for c, p in zip(pred.class_names, pred.probs, strict=True)}
        row = {
            "case_id": str(rec.case_id),
            "patient_id": str(rec.patient_id or rec.case_id),
            "label": str(rec.label),
            **probs,
            "split": str(rec.split or "test"),
            "source": str(getattr(rec, "source", "") or ""),
        }
        columns = columns or list(row)
        rows.append(row)
    return write_predictions(table_from_rows(rows, columns, origin=str(manifest)), out_csv)


@command("evaluate")
def evaluate(
    predictions: Path = typer.Option(
        None, "--predictions", help="Predictions CSV (case_id,patient_id,label,prob_*)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Report folder (metrics.json, report.md, report.html, PNGs)."
    ),
    reads: Path = typer.Option(
        None, "--reads", help="Reader study CSV: reader,case_id,call,with_ai[,confidence]."
    ),
    aggregate: str = typer.Option(
        "mean", "--aggregate", help="Slice -> patient rule: mean, max, topk:5, fraction:0.5."
    ),
    tune_split: str = typer.Option(
        None, "--tune-split", help="Split (column 'split') used to choose the threshold."
    ),
    operating_point: str = typer.Option(None, "--operating-point", help="spec:0.95, sens:0.95 or youden."),
    n_boot: int = typer.Option(DEFAULT_N_BOOT, "--n-boot", help="Bootstrap replicates (patients resampled)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the bootstrap."),
    ci_method: str = typer.Option("percentile", "--ci", help="Bootstrap interval: percentile or bca."),
    compare: Path = typer.Option(None, "--compare", help="Second model's predictions CSV on the same cases."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Run this checkpoint first (needs --data)."),
    data: Path = typer.Option(None, "--data", help="Cohort manifest to run --checkpoint on."),
) -> None:
    """Evaluate predictions per patient with bootstrap intervals; write a report (research use only)."""
    from covidct.evaluation import evaluate_predictions

    if checkpoint is not None or data is not None:
        if checkpoint is None or data is None:
            raise EvaluationError(
                "--checkpoint and --data go together: give both, or give --predictions instead."
            )
        out.mkdir(parents=True, exist_ok=True)
        predictions = predict_manifest(checkpoint, data, out / "predictions.csv")
    if predictions is None:
        raise EvaluationError("Give --predictions preds.csv, or --checkpoint FILE --data MANIFEST.")
    result = evaluate_predictions(
        predictions,
        out_dir=out,
        reads=reads,
        aggregate=aggregate,
        tune_split=tune_split,
        operating_point=operating_point,
        n_boot=n_boot,
        seed=seed,
        ci_method=ci_method,
        compare=compare,
    )
    overall = result.metrics["overall"]
    console.print(
        f"{result.metrics['n_patients']} patients; accuracy {_fmt(overall['accuracy']['estimate'])}; "
        f"report: {result.report_html}"
    )
    for note in result.metrics["limitations"]:
        console.print(f"limitation: {note}")


@command("compare")
def compare_models(
    predictions: list[Path] = typer.Option(
        ..., "--predictions", help="Two predictions CSVs (give the option twice)."
    ),
    out: Path = typer.Option(..., "--out", help="Report folder."),
    aggregate: str = typer.Option("mean", "--aggregate", help="Slice -> patient rule."),
    n_boot: int = typer.Option(DEFAULT_N_BOOT, "--n-boot", help="Bootstrap replicates."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Compare two models on the same cases: paired bootstrap differences, McNemar, DeLong."""
    from covidct.evaluation import evaluate_predictions

    if len(predictions) != 2:
        raise EvaluationError(f"compare needs exactly two --predictions files; got {len(predictions)}.")
    result = evaluate_predictions(
        predictions[0], out_dir=out, aggregate=aggregate, n_boot=n_boot, seed=seed, compare=predictions[1]
    )
    comp = result.metrics["comparison"]
    for key, diff in comp["differences"].items():
        console.print(
            f"{key}: difference {diff['estimate']}, {diff['low']}..{diff['high']}, p={diff['p_value']}"
        )
    console.print(
        f"McNemar p={comp['mcnemar']['p_value']} ({comp['mcnemar']['method']}); report: {result.report_html}"
    )


def _fmt(value: float | None) -> str:
    """A metric for the console: 3 decimals, or 'undefined'."""
    return "undefined" if value is None or value != value else f"{value:.3f}"
