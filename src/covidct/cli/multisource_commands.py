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


@command("loso")
def loso_command(
    cohort: Annotated[
        Path, typer.Argument(help="Cohort manifest with a source column (covidct build-cohort).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the fold runs and the table.")],
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Training config of a slice model: a shipped name "
                                 "(`covidct configs`) or a YAML path.")
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            "--scorer",
            help="Score with a lesion scorer instead of a CNN: 'lesion-fraction' (weight-free) or "
            "'lesion-logistic' (13 lesion-pattern features, logistic regression fitted per fold on "
            "its training sources); no --config needed.",
        ),
    ] = None,
    groups: Annotated[
        str | None,
        typer.Option(
            "--groups",
            help="Held-out groups, ';' between groups, '+' inside one "
            "(default 'UCSD;COVID-CT-MD;Inf-Net+LIDC-IDRI;ieee8023+Kaggle').",
        ),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Patients of the training sources kept for validation.")
    ] = 0.15,
    val_mode: Annotated[
        str,
        typer.Option(
            "--val-mode",
            help="'patients': validate on --val-fraction of each training source's patients; "
            "'next-group': validate on the next held-out group (a source never trained on).",
        ),
    ] = "patients",
    two_class_only: Annotated[
        bool,
        typer.Option(
            "--two-class-only",
            help="Train only on sources that hold both classes "
            "(a one-class source's look predicts its label).",
        ),
    ] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs per fold.")] = None,
    rescore: Annotated[
        bool,
        typer.Option(
            "--rescore",
            help="Do not train: score the finished folds in --out again from their prediction CSVs.",
        ),
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="With --scorer: the split and bootstrap seed (default 0). CNN runs take theirs from the "
            "config (--set seed=N --set data.split_seed=N).",
        ),
    ] = None,
) -> None:
    """Leave-one-source-out: train on all sources but one group, score the held-out group, per group
    (or, with --scorer, score every fold with a lesion scorer: weight-free, or a logistic regression on
    lesion features fitted on the fold's training slices)."""
    from covidct.io import read_manifest
    from covidct.training.config import parse_set_options
    from covidct.training.loso import (
        check_cnn_options,
        check_rescorable,
        loso_config,
        loso_table,
        parse_groups,
        rescore_loso,
        run_loso,
    )

    if scorer is not None:
        _scorer_loso(cohort, out, scorer, groups, val_fraction, config, set_, epochs, rescore, seed)
        return
    check_cnn_options(seed=seed)
    if rescore:
        console.print(loso_table(rescore_loso(check_rescorable(out))), highlight=False, markup=False)
        return
    overrides = parse_set_options(set_)
    if epochs is not None:
        overrides["epochs"] = epochs
    cfg = loso_config(config, cohort, overrides)
    result = run_loso(
        cfg, read_manifest(cohort), out, groups=parse_groups(groups), val_fraction=val_fraction,
        val_mode=val_mode, two_class_only=two_class_only,
    )
    console.print(loso_table(result.folds), highlight=False, markup=False)
    console.print(
        f"written: {Path(result.out_dir) / 'loso.json'} ({result.wall_time_s:.0f} s)",
        highlight=False,
        markup=False,
    )


def _scorer_loso(
    cohort: Path,
    out: Path,
    scorer: str,
    groups: str | None,
    val_fraction: float,
    config: str | None,
    set_: list[str] | None,
    epochs: int | None,
    rescore: bool,
    seed: int | None,
) -> None:
    """`covidct loso --scorer NAME`: every fold scored without training (`run_scorer_loso`)."""
    from covidct.errors import ConfigError
    from covidct.io import read_manifest
    from covidct.training.loso import loso_table, parse_groups
    from covidct.training.loso_scorers import get_scorer, run_scorer_loso

    if config is not None or set_ or epochs is not None or rescore:
        raise ConfigError("--scorer trains no CNN: leave out --config, --set, --epochs and --rescore.")
    get_scorer(scorer)
    result = run_scorer_loso(
        read_manifest(cohort), out, scorer=scorer, groups=parse_groups(groups), val_fraction=val_fraction,
        data=str(cohort), seed=0 if seed is None else seed,
    )
    console.print(loso_table(result.folds), highlight=False, markup=False)
    console.print(
        f"written: {Path(result.out_dir) / 'loso.json'} ({result.wall_time_s:.0f} s, no CNN trained)",
        highlight=False,
        markup=False,
    )
