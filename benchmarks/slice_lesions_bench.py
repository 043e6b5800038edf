"""Weight-free 2D lesion score (`covidct.quant.slice_lesions`) checked where true HU exists.

Every lung slice of the HU series in ../shared/data (COVID-CT-MD P001, cap001, normal001; LIDC-IDRI
0001-0003) is windowed to grey (lung window -600/1500, as the cohort does), standardised back to
pseudo-HU and compared with its true HU; its lesion fraction is compared with the same 2D rule on
the true HU, with the 3D HU analysis (`analyse_ct`, per-slice involvement) and with the radiologists'
slice labels (COVID-CT-MD). Also the mean slice score per study (COVID-19 > CAP > Normal?).

    .venv/bin/python benchmarks/slice_lesions_bench.py

Writes benchmarks/out/slice_lesions_bench.json.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from covidct.data.cohort_builder import is_lung_slice
from covidct.io import read_volume
from covidct.preprocessing.window import LUNG_WINDOW
from covidct.quant.analysis import analyse_ct
from covidct.quant.slice_lesions import check_pseudo_hu

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COVIDCT_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "out" / "slice_lesions_bench.json"
CTMD = {"P001": "COVID-19", "cap001": "CAP", "normal001": "Normal"}


def series_paths() -> dict[str, Path]:
    out = {name: SHARED / "covid-ct-md" / cls / name for name, cls in CTMD.items()}
    for i, patient in enumerate(sorted((SHARED / "lidc-idri-small").glob("LIDC-IDRI-*")), 1):
        out[f"LIDC-{i}"] = patient
    return out


def infection_labels(name: str, files: list[str]) -> list[int] | None:
    """The radiologists' per-slice infection labels in the volume's slice order (COVID-CT-MD only)."""
    if name not in CTMD:
        return None
    path = SHARED / "covid-ct-md" / CTMD[name] / f"{name}_slice_labels.csv"
    with open(path, newline="") as fh:
        by_file = {r["file"].strip(): int(r["infection"]) for r in csv.DictReader(fh)}
    return [by_file[Path(f).name] for f in files]


def measure_series(name: str, path: Path) -> dict:
    volume = read_volume(path)
    involvement = analyse_ct(volume).slice_involvement
    labels = infection_labels(name, [str(f) for f in volume.meta.files])
    rows = []
    for z in range(volume.num_slices):
        if not is_lung_slice(volume.array[z], volume.is_hu):
            continue
        check = check_pseudo_hu(volume.array[z], LUNG_WINDOW.center, LUNG_WINDOW.width)
        rows.append(
            {
                "z": z,
                **check.__dict__,
                "involvement_3d": float(involvement[z]),
                "infection": None if labels is None else labels[z],
            }
        )
    return {"lung_slices": len(rows), "slices": rows}


def summarise(series: dict[str, dict]) -> dict:
    rows = [r for s in series.values() for r in s["slices"]]
    pseudo = np.array([r["lesion_fraction"] for r in rows])
    true = np.array([r["lesion_fraction_true_hu"] for r in rows])
    three_d = np.array([r["involvement_3d"] for r in rows])
    labelled = [r for r in rows if r["infection"] is not None]
    out = {
        "lung_slices": len(rows),
        "median_abs_error_hu": float(np.median([r["median_abs_error_hu"] for r in rows])),
        "median_error_hu": float(np.median([r["median_error_hu"] for r in rows])),
        "median_abs_error_lesion_bands_hu": float(
            np.nanmedian([r["median_abs_error_lesion_bands_hu"] for r in rows])
        ),
        "lesion_fraction_abs_diff_vs_true_hu_mean": float(np.mean(np.abs(pseudo - true))),
        "spearman_vs_true_hu_2d": float(spearmanr(pseudo, true).statistic),
        "spearman_vs_3d_involvement": float(spearmanr(pseudo, three_d).statistic),
        "spearman_true_hu_2d_vs_3d": float(spearmanr(true, three_d).statistic),
        "auc_infection_slices_ctmd": float(
            roc_auc_score([r["infection"] for r in labelled], [r["lesion_fraction"] for r in labelled])
        ),
        "auc_infection_slices_ctmd_true_hu": float(
            roc_auc_score(
                [r["infection"] for r in labelled], [r["lesion_fraction_true_hu"] for r in labelled]
            )
        ),
        "per_series": {},
    }
    for name, s in series.items():
        frac = [r["lesion_fraction"] for r in s["slices"]]
        out["per_series"][name] = {
            "lung_slices": s["lung_slices"],
            "mean_score": float(np.mean(frac)),
            "mean_score_true_hu": float(np.mean([r["lesion_fraction_true_hu"] for r in s["slices"]])),
            "mean_involvement_3d": float(np.mean([r["involvement_3d"] for r in s["slices"]])),
            "median_abs_error_hu": float(np.median([r["median_abs_error_hu"] for r in s["slices"]])),
            "median_error_hu": float(np.median([r["median_error_hu"] for r in s["slices"]])),
        }
    means = {n: out["per_series"][n]["mean_score"] for n in CTMD}
    out["ranking_covid_cap_normal"] = bool(means["P001"] > means["cap001"] > means["normal001"])
    return out


def main() -> None:
    start = time.perf_counter()
    series = {name: measure_series(name, path) for name, path in series_paths().items()}
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPU)",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "window": [LUNG_WINDOW.center, LUNG_WINDOW.width],
        "summary": summarise(series),
        "wall_s": round(time.perf_counter() - start, 1),
        "series": series,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))


if __name__ == "__main__":
    main()
