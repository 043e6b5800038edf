"""Write an `Explanation` to a folder: overlays per slice, a montage, an HTML viewer, NIfTI, JSON."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image

from covidct.errors import ExplainError
from covidct.explain.overlay import DEFAULT_ALPHA, montage, overlay_rgb, window_to_uint8
from covidct.explain.pipeline import Explanation
from covidct.io import write_nifti
from covidct.io.volume import Volume

MONTAGE_COLUMNS = 4
MONTAGE_MAX_TILES = 16
LUNG_CONTOUR_RGB = (0, 255, 0)


def _lung_contour(labels2d: np.ndarray) -> np.ndarray:
    """bool (H, W): one-pixel boundary of the lung mask."""
    from scipy import ndimage as ndi

    lung = labels2d > 0
    return lung & ~ndi.binary_erosion(lung)


def render_slice(volume: Volume, heatmap: np.ndarray, z: int, lungs: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8: slice ``z`` in the lung window with the heatmap (and lung contour) over it."""
    grey = window_to_uint8(volume.array[z], is_hu=volume.is_hu)
    rgb = overlay_rgb(grey, heatmap[z], DEFAULT_ALPHA)
    if lungs is not None:
        rgb[_lung_contour(lungs[z])] = LUNG_CONTOUR_RGB
    return rgb


def _write_nifti(heatmap: np.ndarray, volume: Volume, path: Path) -> None:
    """The heatmap as NIfTI on the volume's grid (`covidct.io.write_nifti`)."""
    heat_vol = Volume(
        heatmap.astype(np.float32),
        volume.spacing,
        volume.origin,
        volume.direction,
        is_hu=False,
        meta=volume.meta,
    )
    write_nifti(heat_vol, path)


def _html_page(exp: Explanation, names: list[str]) -> str:
    """Self-contained page: a slider scrolls through the overlay PNGs; the summary below."""
    files = json.dumps(names)
    labels = json.dumps([f"slice {n.split('_')[1].split('.')[0]}" for n in names])
    summary = html.escape(json.dumps(exp.summary(), indent=2))
    title = html.escape(f"{exp.method} on {exp.model_name}: {exp.target_class} p={exp.probability}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1em}} img{{max-width:100%;image-rendering:pixelated}}</style>
</head><body>
<h1>{title}</h1>
<p>{html.escape(exp.description)}</p>
<p>Research use only, not for diagnosis.</p>
<input id="s" type="range" min="0" max="{len(names) - 1}" value="0" style="width:60%">
<span id="l"></span><br><img id="i" alt="overlay">
<pre>{summary}</pre>
<script>
const f={files}, l={labels}, s=document.getElementById('s');
function show(){{document.getElementById('i').src='overlays/'+f[s.value];
document.getElementById('l').textContent=l[s.value];}}
s.oninput=show; show();
document.onkeydown=e=>{{if(e.key==='ArrowRight')s.value++;if(e.key==='ArrowLeft')s.value--;show();}};
</script></body></html>
"""


def write_explanation(exp: Explanation, volume: Volume, out_dir: str | Path) -> dict[str, str]:
    """Write overlays/, montage.png, index.html, heatmap.nii.gz and summary.json; return their paths."""
    out = Path(out_dir)
    try:
        (out / "overlays").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExplainError(f"Cannot create output folder {out}: {exc}. Choose a writable --out.") from exc
    if exp.heatmap.shape != volume.shape:
        raise ExplainError(f"Heatmap shape {exp.heatmap.shape} differs from the volume's {volume.shape}.")
    names, tiles = [], []
    for z in exp.slices:
        rgb = render_slice(volume, exp.heatmap, z, exp.lung_labels)
        name = f"slice_{z:04d}.png"
        Image.fromarray(rgb).save(out / "overlays" / name)
        names.append(name)
        tiles.append(rgb)
    Image.fromarray(montage(tiles[:MONTAGE_MAX_TILES], MONTAGE_COLUMNS)).save(out / "montage.png")
    (out / "index.html").write_text(_html_page(exp, names), encoding="utf-8")
    _write_nifti(exp.heatmap, volume, out / "heatmap.nii.gz")
    (out / "summary.json").write_text(json.dumps(exp.summary(), indent=2, default=float), encoding="utf-8")
    return {
        "overlays": str(out / "overlays"),
        "montage": str(out / "montage.png"),
        "html": str(out / "index.html"),
        "heatmap": str(out / "heatmap.nii.gz"),
        "summary": str(out / "summary.json"),
    }
