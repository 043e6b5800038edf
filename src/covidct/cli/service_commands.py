"""Service sub-commands: predict, triage, serve, token (the DICOM node's `dicom-listen` follows)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from covidct.cli.app import app, command, console, guarded
from covidct.extras import require_extra
from covidct.service.ohif import OHIF_URL_ENV

DEFAULT_DB = "covidct.db"
DEFAULT_DATA_DIR = "covidct-data"
DEFAULT_REPORT_DIR = "covidct-reports"
WORKLIST_TABLE_ROWS = 50

CheckpointOpt = Annotated[list[Path] | None, typer.Option(
    "--checkpoint", "-c", help="Checkpoint file; repeat to ensemble (probabilities are averaged). Without "
    "one, the report is the quantitative CT from Hounsfield units alone (no trained weights).")]
DbOpt = Annotated[str, typer.Option("--db", help="SQLite file path or database URL (postgresql://...).")]
NoExplainOpt = Annotated[bool, typer.Option("--no-explain", help="Skip heatmaps and lung quantification.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto (CUDA when available); the "
                                        "device and backend used are recorded in every result.")]

token_app = typer.Typer(help="API tokens for `covidct serve` (only their sha256 is stored).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


def check_device(device: str) -> None:
    """Refuse an unusable --device before any file, port or model is touched (`ConfigError`)."""
    from covidct.models.device import resolve_device

    resolve_device(device)


def _predictor(checkpoints: list[Path] | None, explain: bool, device: str = "auto") -> Any:
    from covidct.service.predictor import Predictor

    return Predictor([str(c) for c in checkpoints or []], explain=explain, device=device)


@command("predict")
def predict_cmd(paths: Annotated[list[Path], typer.Argument(help="DICOM folders/zips, NIfTI files.")],
                checkpoint: CheckpointOpt = None,
                out: Annotated[Path, typer.Option("--out", help="Folder for the reports.")] = Path(
                    DEFAULT_REPORT_DIR),
                one: Annotated[bool, typer.Option("--one", help="Each path must hold one study: refuse "
                                                  "(listing them) when it holds several.")] = False,
                no_explain: NoExplainOpt = False, device: DeviceOpt = "auto") -> None:
    """Analyse studies; write per study a JSON and an HTML report and, when the quantitative CT ran, the
    lung and lesion masks (NIfTI label maps; a DICOM SEG for DICOM input). A folder of several studies
    gives one report each; studies are found by their DICOM UIDs."""
    require_extra("report", "jinja2", feature="covidct predict's HTML reports")
    check_device(device)
    from covidct.io.discovery import discover_list
    from covidct.service.memory import retain_freed_memory

    retain_freed_memory()  # what one study frees, the next stage or study reuses
    predictor = _predictor(checkpoint, not no_explain, device)
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
    """Analyse one study, write its outputs (report, masks) and print its JSON line (report folder named
    after the study)."""
    from covidct.service.report import MASK_KEYS, study_name, write_study_outputs

    result = predictor.predict(source, series_uid=series_uid)
    data = result.to_dict()
    name = study_name(data, str(source))
    if several and series_uid:
        name = f"{name}_{series_uid[-12:]}"
    written = write_study_outputs(result, out / name)
    quant = data.get("quantitative") or {}
    typer.echo(json.dumps({"source": str(source), **({"series_uid": series_uid} if series_uid else {}),
                           "predicted_class": data["predicted_class"],
                           "covid_probability": data["covid_probability"],
                           **({"fused_score": data["fused"]["probability"]} if data.get("fused") else {}),
                           "quantitative": quant.get("summary") or quant.get("reason"),
                           "device": data["device"], "backend": data["backend"],
                           **({"validity": [v["statement"] for v in data["validity"]]}
                              if data.get("validity") else {}),
                           "report": str(written["html"]), "json": str(written["json"]),
                           **{key: str(written[key]) for key in MASK_KEYS if key in written}}))


def print_worklist(jobs: list[Any], limit: int = WORKLIST_TABLE_ROWS) -> None:
    """The worklist as a rich table on stdout."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from covidct.service.report import worklist_row

    table = Table(title="Worklist (highest COVID-19 probability first)")
    for col in ("#", "patient ID", "involvement", "severity", "COVID-19 prob.", "class", "status",
                "series UID / source"):
        table.add_column(col)
    for rank, j in enumerate(jobs[:limit], start=1):
        row = worklist_row(j)
        prob = "-" if j.covid_probability is None else f"{j.covid_probability:.3f}"
        involvement = "-" if row["involvement_pct"] is None else f"{row['involvement_pct']:.1f} %"
        severity = "-" if row["severity_score"] is None else str(row["severity_score"])
        cells = (str(rank), row["patient_id"], involvement, severity, prob, j.predicted_class or "no model",
                 j.status, j.series_uid or Path(j.source_path).name)
        table.add_row(*(escape(str(c)) for c in cells))
    Console().print(table)


ENGINES = ("local", "ray")
DEVICES = ("cpu", "cuda", "auto")  # covidct.models.device.DEVICES (not imported: it loads torch)


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
               actors: Annotated[int | None, typer.Option("--actors", help="Ray actors (default: one per "
                                                          "free CPU, or GPU with cuda).")] = None,
               data_dir: Annotated[Path, typer.Option("--data-dir", help="Where zips found inside zips "
                                                      "are kept for their jobs.")] = Path(DEFAULT_DATA_DIR),
               no_explain: NoExplainOpt = False, device: DeviceOpt = "auto",
               viewer_url: Annotated[str | None, typer.Option(
                   "--viewer-url", help="Base URL of a `covidct serve` holding these studies: the HTML "
                   "worklist then links each row to its viewer page.")] = None) -> None:
    """Triage many studies into a worklist; re-running skips done studies and retries failed ones.
    The HTML worklist links each study to its report (with --out) and viewer (with --viewer-url).
    With --engine ray, --device is checked on the Ray workers (one GPU per actor with cuda)."""
    require_extra("serve", "sqlalchemy", feature="covidct triage's worklist database")
    require_extra("report", "jinja2", feature="covidct triage's reports")
    if engine != "ray":
        check_device(device)
    from rich.progress import Progress

    from covidct.service.report import export_worklist
    from covidct.service.store import JobStore
    from covidct.service.triage import triage

    runner = _runner(engine, address, device, actors, checkpoint, not no_explain, db, out)
    predictor = _predictor(checkpoint, not no_explain, "cpu" if runner is not None else device)
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
        export_worklist(jobs, path, report_dir=out, viewer_base=viewer_url)
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
        return None
    if device == "auto":  # the workers' device: CUDA when this machine has one (a remote cluster: name it)
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
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
              no_explain: NoExplainOpt = False, device: DeviceOpt = "auto",
              ohif_url: Annotated[str | None, typer.Option(
                  "--ohif-url", envvar=OHIF_URL_ENV, help="Root of an OHIF viewer reading the PACS the "
                  "studies come from (e.g. https://pacs.example.org/ohif): each study links to its OHIF view "
                  "(ohif_url in the API data).")] = None) -> None:
    """Run the REST API and web page (http://HOST:PORT/, OpenAPI docs at /docs)."""
    require_extra("serve", "fastapi", "uvicorn", "python_multipart", "sqlalchemy", feature="covidct serve")
    check_device(device)
    from covidct.service.api import ServiceSettings, serve
    from covidct.service.memory import retain_freed_memory

    retain_freed_memory()  # a server analyses study after study: reuse the memory the last one freed
    settings = ServiceSettings(checkpoints=[str(c) for c in checkpoint or []], db=db, data_dir=str(data_dir),
                               workers=workers, max_upload_mb=max_upload_mb, explain=not no_explain,
                               device=device, ohif_url=ohif_url)
    console.print(f"covidct serving on http://{host}:{port}/ (docs at /docs)")
    serve(settings, host=host, port=port)


@token_app.command("create")
@guarded
def token_create(name: Annotated[str, typer.Argument(help="A name for the token (who uses it).")],
                 db: DbOpt = DEFAULT_DB) -> None:
    """Create an API token and print it once (only its sha256 is stored)."""
    require_extra("serve", "sqlalchemy", feature="covidct token")
    from covidct.service.store import JobStore

    store = JobStore(db)
    typer.echo(store.create_token(name))
    store.close()


@token_app.command("list")
@guarded
def token_list(db: DbOpt = DEFAULT_DB) -> None:
    """List token names."""
    require_extra("serve", "sqlalchemy", feature="covidct token")
    from covidct.service.store import JobStore

    for name in JobStore(db).token_names():
        typer.echo(name)


@token_app.command("revoke")
@guarded
def token_revoke(name: str, db: DbOpt = DEFAULT_DB) -> None:
    """Delete a token."""
    require_extra("serve", "sqlalchemy", feature="covidct token")
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
        no_explain: NoExplainOpt = False, device: DeviceOpt = "auto") -> None:
    """DICOM node: receive CT series (C-STORE), analyse each when complete, send back SR + key images."""
    require_extra("dicom-net", "pynetdicom", "highdicom", feature="covidct dicom-listen")
    require_extra("serve", "sqlalchemy", feature="covidct dicom-listen's job database")
    check_device(device)
    from covidct.service.dicom_node import (
        DicomListener,
        configure_logging,
        destination_from_options,
        ensure_port_free,
        run_until_stopped,
    )
    from covidct.service.memory import retain_freed_memory
    from covidct.service.store import JobStore

    destination = destination_from_options(dest_host, dest_port, dest_ae)
    listener = DicomListener(ae_title, port, storage_dir=storage, analyse=lambda _d: None,
                             quiet_seconds=quiet_seconds, destination=destination, host=host)
    ensure_port_free(host, port)  # before the (slow) model load
    predictor = _predictor(checkpoint, not no_explain, device)
    predictor.warm_up()  # a node waits for studies: the first one should not pay the cold start
    retain_freed_memory()  # and reuses the memory each study frees
    store = JobStore(db)

    def on_result(series_uid: str, result: Any) -> None:
        quant = result.quantitative or {}
        typer.echo(json.dumps({"series_uid": series_uid, "predicted_class": result.predicted_class,
                               "probabilities": result.probabilities, "backend": result.backend,
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
