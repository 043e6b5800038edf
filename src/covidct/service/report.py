"""Per-study reports (JSON + self-contained HTML) and worklist exports (CSV, HTML)."""

from __future__ import annotations

import base64
import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covidct import RESEARCH_USE_STATEMENT
from covidct.errors import ServiceError

TEMPLATES = Path(__file__).with_name("templates")
WORKLIST_COLUMNS = ("rank", "id", "status", "covid_probability", "predicted_class", "series_uid",
                    "study_uid", "source_path", "error", "updated_at")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _env() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))


def study_name(result: dict[str, Any], fallback: str) -> str:
    """A file-system-safe name for a study's report folder."""
    raw = Path(fallback).name.removesuffix(".gz").removesuffix(".nii").removesuffix(".zip") or "study"
    return SAFE_NAME.sub("_", raw)[:80]


def _b64(images: dict[int, bytes] | None) -> dict[int, str]:
    return {int(k): base64.b64encode(v).decode("ascii") for k, v in sorted((images or {}).items())}


def render_html(result: dict[str, Any], overlays: dict[int, bytes],
                clean: dict[int, bytes] | None = None) -> str:
    """One self-contained HTML page: key slices clean and with overlays (numbered as PACS shows them),
    score strip and probabilities when a model ran, the quantitative CT, warnings."""
    return _env().get_template("report.html.j2").render(
        r=result, pngs=_b64(overlays), clean=_b64(clean), research_use=RESEARCH_USE_STATEMENT,
        strip=score_strip(result.get("slice_scores")))


def score_strip(scores: Sequence[float] | None, height: int = 40) -> list[dict[str, float]]:
    """Bars of the per-slice COVID-19 score strip (x, width, height in SVG units)."""
    if not scores:
        return []
    width = 100.0 / len(scores)
    return [{"x": round(i * width, 3), "w": round(width, 3), "h": round(float(s) * height, 2),
             "y": round(height - float(s) * height, 2), "s": round(float(s), 3)}
            for i, s in enumerate(scores)]


def write_study_report(result: dict[str, Any], overlays: dict[int, bytes], out_dir: Path,
                       clean: dict[int, bytes] | None = None) -> dict[str, Path]:
    """Write report.json, report.html and the key-slice PNGs (with overlay; ``clean`` ones beside them)
    under ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for k, png in sorted(overlays.items()):
        p = out_dir / f"key_slice_{k:04d}.png"
        p.write_bytes(png)
        paths[f"slice_{k}"] = p
    for k, png in sorted((clean or {}).items()):
        p = out_dir / f"key_slice_{k:04d}_clean.png"
        p.write_bytes(png)
        paths[f"clean_{k}"] = p
    payload = {**result, "overlay_files": [p.name for k, p in paths.items() if k.startswith("slice_")],
               "clean_files": [p.name for k, p in paths.items() if k.startswith("clean_")]}
    paths["json"] = out_dir / "report.json"
    paths["json"].write_text(json.dumps(payload, indent=2, sort_keys=True))
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(result, overlays, clean))
    return paths


MASK_KEYS = ("lung_nifti", "lesion_nifti", "seg")


def write_study_outputs(result: Any, out_dir: Path) -> dict[str, Path]:
    """Everything `covidct predict` and triage write per study into ``out_dir``: the masks
    (`service.masks.write_study_masks`: NIfTI lung/lesion labels and DICOM SEG, when the quantitative CT
    ran) and then the report (JSON listing the mask files, HTML, key-slice PNGs); returns their paths."""
    from covidct.service.masks import write_study_masks

    masks = write_study_masks(result, out_dir) or {}
    paths = write_study_report(result.to_dict(), result.overlays, out_dir, result.clean_images)
    paths.update({key: out_dir / masks[key] for key in MASK_KEYS if masks.get(key)})
    return paths


def worklist_rows(jobs: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for rank, job in enumerate(jobs, start=1):
        d = job.to_dict(with_result=False) if hasattr(job, "to_dict") else dict(job)
        rows.append({"rank": rank, **{c: d.get(c) for c in WORKLIST_COLUMNS if c != "rank"}})
    return rows


def export_worklist(jobs: Sequence[Any], path: Path) -> Path:
    """Write the worklist as CSV or HTML (chosen by the file's suffix)."""
    rows = worklist_rows(jobs)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(WORKLIST_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix in (".html", ".htm"):
        path.write_text(_env().get_template("worklist.html.j2").render(
            rows=rows, research_use=RESEARCH_USE_STATEMENT))
    else:
        raise ServiceError(f"Cannot export a worklist to {path.name!r}; use a .csv or .html file name.")
    return path
