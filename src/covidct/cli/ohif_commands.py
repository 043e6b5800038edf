"""`covidct ohif-config`: OHIF v3's app-config.js for a DICOMweb server (the study in OHIF, issue 22)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidct.cli.app import command


@command("ohif-config")
def ohif_config_cmd(
        dicomweb_root: Annotated[str, typer.Argument(help="DICOMweb root OHIF reads: /dicom-web (a path on "
                                                     "OHIF's own origin) or https://pacs.example.org/dicom-web.")],
        out: Annotated[Path | None, typer.Option("--out", help="File to write (OHIF's dist/app-config.js); "
                                                 "default: standard output.")] = None) -> None:
    """Write OHIF's app-config.js with one DICOMweb data source (OHIF itself: scripts/fetch-ohif.sh)."""
    from covidct.service.ohif import ohif_app_config

    text = ohif_app_config(dicomweb_root)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text)
    typer.echo(f"OHIF configuration written to {out}", err=True)
