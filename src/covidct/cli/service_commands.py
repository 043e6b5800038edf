"""Service sub-commands: predict, triage, serve, token (the DICOM node's `dicom-listen` follows)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from covidct.cli.app import app, command, console, guarded

DEFAULT_DB = "covidct.db"
DEFAULT_DATA_DIR = "covidct-data"
DEFAULT_REPORT_DIR = "covidct-reports"
WORKLIST_TABLE_ROWS = 50

CheckpointOpt = Annotated[list[Path] | None, typer.Option(
    "--checkpoint", "-c", help="Checkpoint file; repeat to ensemble (probabilities are averaged). Without "
    "one, the report is the quantitative CT from Hounsfield units alone (no trained weights).")]
DbOpt = Annotated[str, typer.Option("--db", help="SQLite file path or database URL (postgresql://...).")]
NoExplainOpt = Annotated[bool, typer.Option("--no-explain", help="Skip heatmaps and lung quantification.")]

token_app = typer.Typer(help="API tokens for `covidct serve` (only their sha256 is stored).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


def _predictor(checkpoints: list[Path] | None, explain: bool) -> Any:
    from covidct.service.predictor import Predictor

    return Predictor([str(c) for c in checkpoints or []], explain=explain)


@command("predict")
def predict_cmd(paths: Annotated[list[Path], typer.Argument(help="DICOM folders/zips, NIfTI files.")],
                checkpoint: CheckpointOpt = None,
                out: Annotated[Path, typer.Option("--out", help="Folder for the reports.")] = Path(
                    DEFAULT_REPORT_DIR),
                one: Annotated[bool, typer.Option("--one", help="Each path must hold one study: refuse "
                                                  "(listing them) when it holds several.")] = False,
                no_explain: NoExplainOpt = False) -> None:
    """Analyse studies; write a JSON and an HTML report per study (a folder of several studies gives one
    report each; studies are found by their DICOM UIDs)."""
    from covidct.io.discovery import discover_list

    predictor = _predictor(checkpoint, not no_explain)
    for path in paths:
        studies = discover_list(path)
        if one and len(studies) > 1:
            from covidct.errors import InputError

            listing = "\n  ".join(s.label for s in studies)
            raise InputError(f"{path} holds {len(studies)} studies, and --one asks for one:\n  {listing}\n"
                             "Give one study's folder, or leave out --one for a report per study.")
        for study in studies:
            _predict_one(predictor, study.source, study.series_uid, out, several=len(studies) > 1)


def _predict_one(predictor: Any, source: Path, series_uid: str | None, out: Path, *, several: bool) -> None:
    """Analyse one study and print its JSON line (report folder named after the study)."""
    from covidct.service.report import study_name, write_study_report

    result = predictor.predict(source, series_uid=series_uid)
    data = result.to_dict()
    name = study_name(data, str(source))
    if several and series_uid:
        name = f"{name}_{series_uid[-12:]}"
    written = write_study_report(data, result.overlays, out / name)
    quant = data.get("quantitative") or {}
    typer.echo(json.dumps({"source": str(source), **({"series_uid": series_uid} if series_uid else {}),
                           "predicted_class": data["predicted_class"],
                           "covid_probability": data["covid_probability"],
                           **({"fused_score": data["fused"]["probability"]} if data.get("fused") else {}),
                           "quantitative": quant.get("summary") or quant.get("reason"),
                           **({"validity": [v["statement"] for v in data["validity"]]}
                              if data.get("validity") else {}),
                           "report": str(written["html"]), "json": str(written["json"])}))


def print_worklist(jobs: list[Any], limit: int = WORKLIST_TABLE_ROWS) -> None:
    """The worklist as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Worklist (highest COVID-19 probability first)")
    for col in ("#", "COVID-19 prob.", "class", "status", "series UID / source"):
        table.add_column(col)
    for rank, j in enumerate(jobs[:limit], start=1):
        prob = "-" if j.covid_probability is None else f"{j.covid_probability:.3f}"
        table.add_row(str(rank), prob, j.predicted_class or "-", j.status,
                      j.series_uid or Path(j.source_path).name)
    Console().print(table)


ENGINES = ("local", "ray")
DEVICES = ("cpu", "cuda")


@command("triage")
def triage_cmd(source: Annotated[Path, typer.Argument(help="Archive: a folder or zip of studies (found by "
                                                      "their DICOM UIDs, any layout), or a manifest CSV.")],
               checkpoint: CheckpointOpt = None,
               db: DbOpt = DEFAULT_DB,
               export: Annotated[list[Path] | None, typer.Option("--export", help="worklist.csv and/or "
                                                                 "worklist.html; repeatable.")] = None,
               out: Annotated[Path | None, typer.Option("--out", help="Also write an HTML report per "
                                                        "study here.")] = None,
               engine: Annotated[str, typer.Option("--engine", help="local: worker pool in this process; "
                                                   "ray: an actor pool on a Ray cluster (covidct[scale]).")]
               = "local",
               address: Annotated[str | None, typer.Option("--address", help="Ray cluster: auto, HOST:PORT "
                                                           "or ray://HOST:PORT; none: a local Ray.")] = None,
               device: Annotated[str, typer.Option("--device", help="cpu or cuda (Ray: one GPU per "
                                                   "actor).")] = "cpu",
               actors: Annotated[int | None, typer.Option("--actors", help="Ray actors (default: one per "
                                                          "free CPU, or GPU with cuda).")] = None,
               data_dir: Annotated[Path, typer.Option("--data-dir", help="Where zips found inside zips "
                                                      "are kept for their jobs.")] = Path(DEFAULT_DATA_DIR),
               no_explain: NoExplainOpt = False) -> None:
    """Triage many studies into a worklist; re-running skips done studies and retries failed ones."""
    from rich.progress import Progress

    from covidct.service.report import export_worklist
    from covidct.service.store import JobStore
    from covidct.service.triage import triage

    runner = _runner(engine, address, device, actors, checkpoint, not no_explain, db, out)
    predictor = _predictor(checkpoint, not no_explain)
    store = JobStore(db)
    start = time.monotonic()
    with Progress(console=console, transient=False) as bar:
        task = bar.add_task("discovering studies", total=None)

        def found(stats: Any) -> None:
            bar.update(task, description=f"discovering: {stats.headers} DICOM headers, "
                       f"{stats.headers_per_s:.0f}/s")

        def progress(done: int, total: int, _job: Any) -> None:
            minutes = max(time.monotonic() - start, 1e-9) / 60
            bar.update(task, completed=done, total=total,
                       description=f"triage ({engine}) {done / minutes:.1f} studies/min")

        summary = triage(source, predictor, store, report_dir=out, progress=progress, runner=runner,
                         staging_dir=data_dir / "staged", discovery_progress=found)
    jobs = store.list_jobs()
    print_worklist(jobs)
    for path in export or []:
        export_worklist(jobs, path)
        console.print(f"worklist written to {path}")
    console.print(f"{summary.total} studies: {summary.done} analysed, {summary.skipped} already done, "
                  f"{summary.failed} failed, {summary.requeued_stale} re-queued from an interrupted run.")
    if summary.discovery.n_problems:
        console.print(f"{summary.discovery.n_problems} files could not be read and were left out, e.g. "
                      + "; ".join(summary.discovery.problems[:3]), markup=False)
    store.close()


def _runner(engine: str, address: str | None, device: str, actors: int | None,
            checkpoints: list[Path] | None, explain: bool, db: str, out: Path | None) -> Any:
    """None (the local worker pool) or a RayRunner; bad combinations refused before any model loads."""
    from covidct.errors import ServiceError, unknown_name_message

    if engine not in ENGINES:
        raise ServiceError(unknown_name_message("engine", engine, ENGINES))
    if device not in DEVICES:
        raise ServiceError(unknown_name_message("device", device, DEVICES))
    if engine == "local":
        if address is not None or actors is not None:
            raise ServiceError("--address and --actors need --engine ray.")
        if device != "cpu":
            raise ServiceError("--device cuda needs --engine ray here; the local worker pool runs on CPU.")
        return None
    from covidct.service.ray_engine import RayRunner, RaySettings

    return RayRunner(RaySettings(address=address, device=device, actors=actors),
                     checkpoints=[str(c) for c in checkpoints or []], explain=explain, db=db, report_dir=out)


@command("serve")
def serve_cmd(checkpoint: CheckpointOpt = None,
              host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
              db: DbOpt = DEFAULT_DB,
              data_dir: Annotated[Path, typer.Option("--data-dir", help="Uploads and image data.")] = Path(
                  DEFAULT_DATA_DIR),
              workers: Annotated[int, typer.Option(help="Worker threads analysing queued studies.")] = 1,
              max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Upload limit.")] = 512.0,
              no_explain: NoExplainOpt = False) -> None:
    """Run the REST API and web page (http://HOST:PORT/, OpenAPI docs at /docs)."""
    from covidct.service.api import ServiceSettings, serve

    settings = ServiceSettings(checkpoints=[str(c) for c in checkpoint or []], db=db, data_dir=str(data_dir),
                               workers=workers, max_upload_mb=max_upload_mb, explain=not no_explain)
    console.print(f"covidct serving on http://{host}:{port}/ (docs at /docs)")
    serve(settings, host=host, port=port)


@token_app.command("create")
@guarded
def token_create(name: Annotated[str, typer.Argument(help="A name for the token (who uses it).")],
                 db: DbOpt = DEFAULT_DB) -> None:
    """Create an API token and print it once (only its sha256 is stored)."""
    from covidct.service.store import JobStore

    store = JobStore(db)
    typer.echo(store.create_token(name))
    store.close()


@token_app.command("list")
@guarded
def token_list(db: DbOpt = DEFAULT_DB) -> None:
    """List token names."""
    from covidct.service.store import JobStore

    for name in JobStore(db).token_names():
        typer.echo(name)


@token_app.command("revoke")
@guarded
def token_revoke(name: str, db: DbOpt = DEFAULT_DB) -> None:
    """Delete a token."""
    from covidct.errors import ServiceError
    from covidct.service.store import JobStore

    if not JobStore(db).revoke_token(name):
        raise ServiceError(f"No token named {name!r}; `covidct token list` shows the names.")
    typer.echo(f"revoked {name}")


# ---- the DICOM node (issue 7 item 6) -------------------------------------------------------------
DEFAULT_DICOM_STORAGE = "covidct-dicom"


@command("dicom-listen")
def dicom_listen_cmd(
        checkpoint: CheckpointOpt = None,
        ae_title: Annotated[str, typer.Option("--ae-title", help="This node's AE title.")] = "COVIDCT",
        port: Annotated[int, typer.Option(help="DICOM port to listen on.")] = 11112,
        host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: all).")] = "0.0.0.0",
        storage: Annotated[Path, typer.Option("--storage", help="Received instances, by study/series.")]
        = Path(DEFAULT_DICOM_STORAGE),
        db: DbOpt = DEFAULT_DB,
        quiet_seconds: Annotated[float, typer.Option("--quiet-seconds", help="A series is complete after "
                                                     "this many seconds without a new instance.")] = 5.0,
        dest_host: Annotated[str | None, typer.Option("--dest-host", help="PACS receiving the SR and key "
                                                      "images (with --dest-port, --dest-ae).")] = None,
        dest_port: Annotated[int | None, typer.Option("--dest-port", help="Its DICOM port.")] = None,
        dest_ae: Annotated[str | None, typer.Option("--dest-ae", help="Its AE title.")] = None,
        no_explain: NoExplainOpt = False) -> None:
    """DICOM node: receive CT series (C-STORE), analyse each when complete, send back SR + key images."""
    from covidct.service.dicom_node import (
        DicomListener,
        configure_logging,
        destination_from_options,
        ensure_port_free,
        run_until_stopped,
    )
    from covidct.service.store import JobStore

    destination = destination_from_options(dest_host, dest_port, dest_ae)
    listener = DicomListener(ae_title, port, storage_dir=storage, analyse=lambda _d: None,
                             quiet_seconds=quiet_seconds, destination=destination, host=host)
    ensure_port_free(host, port)  # before the (slow) model load
    predictor = _predictor(checkpoint, not no_explain)
    store = JobStore(db)

    def on_result(series_uid: str, result: Any) -> None:
        quant = result.quantitative or {}
        typer.echo(json.dumps({"series_uid": series_uid, "predicted_class": result.predicted_class,
                               "probabilities": result.probabilities,
                               "quantitative": quant.get("summary") or quant.get("reason")}))

    listener.analyse, listener.on_result, listener.store = predictor.predict, on_result, store
    configure_logging()
    listener.start()
    console.print(f"DICOM node {listener.ae_title} listening on {host}:{listener.port}; storage {storage}, "
                  f"results in {db}" + (f", sending to {destination.ae_title}@{destination.host}:"
                                        f"{destination.port}" if destination else "") + ". Ctrl-C stops.")
    try:
        run_until_stopped(listener)
    finally:
        store.close()
