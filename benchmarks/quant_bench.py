"""Quantitative CT (no trained weights): speed on P001 and validation on the shared real series.

1. Speed: the quantitative stage (`quantify_study`) on ../shared/data/covid-ct-md/COVID-19/P001
   (148 slices, 512x512; reading the DICOM is not counted), best and median of ``--repeats`` runs,
   wall and process CPU seconds; the full-resolution lung labels timed on their own.
2. Slice level: for each COVID-CT-MD series with infection slices (P001, cap001), the AUC of the
   per-slice involvement and of the slice score (`CTAnalysis.slice_score`) against the radiologists'
   ``infection`` labels (``*_slice_labels.csv``, matched to the volume's slices by file name), with
   DeLong's 95 % interval (slices of one patient are correlated: the interval is narrower than it
   should be). In-sample: the parameters were chosen on these series; held-out figures come from
   benchmarks/quant_validation.py.
   With ``--checkpoint``, the same for the checkpoint's per-slice P(COVID-19) on the same slices.
3. Patient level: involvement, severity and the pattern suggestion of every COVID-CT-MD and
   LIDC-IDRI series.

4. With ``--recover-mm R``, only this: the quantitative stage on P001 with the surface-lesion recovery
   (`covidct.quant.lungs.recover_surface_lesions`) off and at radius R, alternating, ``--repeats`` each
   (writes benchmarks/out/quant_bench_recover.json).

5. With ``--gas-cut``, only this: the quantitative stage with the sub-phrenic gas cut
   (`covidct.quant.lungs.cut_subphrenic_air`) replaced by the identity and as shipped, alternating,
   ``--repeats`` each, on P001 and cap001 (the series whose colon gas it cuts), and the cut alone
   (writes benchmarks/out/quant_bench_gas.json). With ``--lungs-ref FILE`` as well (e.g. an earlier
   ``src/covidct/quant/lungs.py`` from ``git show COMMIT:src/covidct/quant/lungs.py > FILE``), also
   `segment_lungs` of that file and of the current one on the analysis grid, alternating.

Writes benchmarks/out/quant_bench.json. Usage:
    python benchmarks/quant_bench.py [--repeats 3] [--checkpoint PATH] [--recover-mm 20] [--gas-cut]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COVIDCT_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "out" / "quant_bench.json"
CT_MD = {"P001": "COVID-19/P001", "cap001": "CAP/cap001", "normal001": "Normal/normal001"}
TIMED = "P001"
TARGET_S = 1.0
"""Issue 21 item 5: the quantitative stage alone <= 1.0 s on P001."""


def slice_labels(series_dir: Path, files: list[str]) -> np.ndarray:
    """The ``infection`` label of each volume slice, matched by file name (never by order)."""
    table = series_dir.parent / f"{series_dir.name}_slice_labels.csv"
    with table.open(newline="") as fh:
        by_name = {row["file"]: int(row["infection"]) for row in csv.DictReader(fh)}
    return np.array([by_name[Path(f).name] for f in files], dtype=int)


def time_analysis(volume, repeats: int) -> dict:
    """Wall and process CPU seconds of the quantitative stage as the service runs it
    (`quantify_study`: `analyse_ct`, the JSON section and the lesion labels on the volume's grid),
    and of the full-resolution lung labels (`CTAnalysis.lung_labels_full`, computed later on demand)."""
    from covidct.service.quantitative import quantify_study

    walls, cpus, full_walls = [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = quantify_study(volume)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        t1 = time.perf_counter()
        outcome.analysis.lung_labels_full()
        full_walls.append(time.perf_counter() - t1)
    return {
        "repeats": repeats,
        "wall_best_s": round(min(walls), 3),
        "wall_median_s": round(statistics.median(walls), 3),
        "cpu_best_s": round(min(cpus), 3),
        "cpu_median_s": round(statistics.median(cpus), 3),
        "full_resolution_lungs_wall_best_s": round(min(full_walls), 3),
        "full_resolution_lungs_wall_median_s": round(statistics.median(full_walls), 3),
        "target_s": TARGET_S,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def _off_and_on(volume, repeats: int, switched: Callable[[str], AbstractContextManager]) -> dict:
    """Wall seconds of `quantify_study` on ``volume``, "off" and "on" alternating ``repeats`` times, each
    run inside ``switched(key)`` (which puts the step under test out of, or into, the analysis); the
    medians and every run, for the JSON."""
    from covidct.service.quantitative import quantify_study

    walls: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for key in walls:
            with switched(key):
                t0 = time.perf_counter()
                quantify_study(volume)
                walls[key].append(time.perf_counter() - t0)
    return {**{f"quantify_{k}_median_s": round(statistics.median(v), 3) for k, v in walls.items()},
            **{f"quantify_{k}_all_s": [round(t, 3) for t in v] for k, v in walls.items()}}


def _seconds(step: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``step``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def time_recovery(volume, radius_mm: float, repeats: int) -> dict:
    """Wall seconds of `quantify_study` with the recovery off and at ``radius_mm``, alternating (the
    analysis's `segment_lungs` wrapped for the 'on' runs), and of the recovery step alone."""
    from covidct.quant import analysis, lungs

    plain = analysis.segment_lungs

    @contextmanager
    def switched(key: str) -> Iterator[None]:
        radius = radius_mm if key == "on" else 0.0
        analysis.segment_lungs = lambda v: plain(v, recover_radius_mm=radius)
        try:
            yield
        finally:
            analysis.segment_lungs = plain

    walls = _off_and_on(volume, repeats, switched)
    small = analysis.block_mean(volume, analysis.grid_factor(volume))
    labels = plain(small)
    step = _seconds(lambda: lungs.recover_surface_lesions(
        labels, np.asarray(small.array), tuple(small.spacing[1:]), radius_mm,
        inferior_step=lungs.inferior_step_of(small.direction)), repeats)
    return {"radius_mm": radius_mm, "repeats": repeats, **walls,
            "recovery_step_median_s": round(statistics.median(step), 3),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def time_gas_cut(volume, repeats: int) -> dict:
    """Wall seconds of `quantify_study` without the sub-phrenic gas cut (the identity in its place) and
    with it, alternating, and of the cut alone on the analysis grid's candidate air."""
    from covidct.preprocessing.masks import fill_holes
    from covidct.quant import lungs
    from covidct.quant.analysis import block_mean, grid_factor

    shipped = lungs.cut_subphrenic_air

    @contextmanager
    def switched(key: str) -> Iterator[None]:
        if key == "off":
            lungs.cut_subphrenic_air = lambda inside, spacing, *, inferior_step: inside
        try:
            yield
        finally:
            lungs.cut_subphrenic_air = shipped

    walls = _off_and_on(volume, repeats, switched)
    small = block_mean(volume, grid_factor(volume))
    air = np.asarray(small.array) < lungs.AIR_THRESHOLD_HU
    inside = lungs._inside_air_without_airways(air, fill_holes(~air), small.spacing[1] * small.spacing[2])
    step = _seconds(lambda: shipped(inside, tuple(small.spacing),
                                    inferior_step=lungs.inferior_step_of(small.direction)), repeats)
    return {"repeats": repeats, **walls,
            "cut_step_median_s": round(statistics.median(step), 4),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def time_lungs_against(reference: str, volume, repeats: int) -> dict:
    """Median and best wall seconds of `segment_lungs` from the module file ``reference`` and from the
    current `covidct.quant.lungs`, alternating, on the volume's analysis grid."""
    import importlib.util

    from covidct.quant import lungs
    from covidct.quant.analysis import block_mean, grid_factor

    spec = importlib.util.spec_from_file_location("lungs_reference", reference)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    small = block_mean(volume, grid_factor(volume))
    walls: dict[str, list[float]] = {"reference": [], "current": []}
    for _ in range(repeats):
        for key, segment in (("reference", old.segment_lungs), ("current", lungs.segment_lungs)):
            t0 = time.perf_counter()
            segment(small)
            walls[key].append(time.perf_counter() - t0)
    return {f"segment_lungs_{k}_{stat.__name__}_s": round(stat(v), 3)
            for k, v in walls.items() for stat in (statistics.median, min)}


def auc_with_ci(labels: np.ndarray, scores: np.ndarray) -> dict:
    from covidct.evaluation.intervals import delong_interval

    ci = delong_interval(labels, scores)
    return {"auc": round(ci.estimate, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)], "method": "DeLong",
            "n_slices": int(labels.size), "n_infection": int(labels.sum())}


def cnn_slice_scores(checkpoint: str, volume) -> np.ndarray:
    from covidct.classes import COVID
    from covidct.models.inference import predict_volume

    pred = predict_volume(checkpoint, volume)
    if pred.slice_probs is None:
        raise SystemExit(f"{checkpoint} is a scan model: it has no per-slice scores")
    return np.asarray(pred.slice_probs)[:, list(pred.class_names).index(COVID)]


def series_paths() -> dict[str, Path]:
    paths = {name: SHARED / "covid-ct-md" / rel for name, rel in CT_MD.items()}
    lidc = SHARED / "lidc-idri-small"
    if lidc.is_dir():
        paths.update({p.name: p for p in sorted(lidc.iterdir()) if p.is_dir()})
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", help="slice-model checkpoint for side-by-side slice AUCs")
    parser.add_argument("--recover-mm", type=float, default=0.0,
                        help="only time the quantitative stage with the surface recovery off and on (mm)")
    parser.add_argument("--gas-cut", action="store_true",
                        help="only time the quantitative stage without and with the sub-phrenic gas cut")
    parser.add_argument("--lungs-ref",
                        help="with --gas-cut: a reference lungs.py to time segment_lungs against")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: this benchmark needs the shared real data")
    if args.gas_cut:
        from covidct.io import read_volume

        result = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "series": {}}
        for name in ("P001", "cap001"):
            volume = read_volume(series_paths()[name])
            row = time_gas_cut(volume, args.repeats)
            if args.lungs_ref:
                row.update(time_lungs_against(args.lungs_ref, volume, args.repeats))
            result["series"][name] = row
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.with_name("quant_bench_gas.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    if args.recover_mm > 0:
        from covidct.io import read_volume

        result = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "series": TIMED,
                  **time_recovery(read_volume(series_paths()[TIMED]), args.recover_mm, args.repeats)}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.with_name("quant_bench_recover.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return

    from covidct.io import read_volume
    from covidct.quant.analysis import analyse_ct

    out: dict = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "series": {},
        "checkpoint": args.checkpoint,
    }
    for name, path in series_paths().items():
        volume = read_volume(path)
        if name == TIMED:
            timing = time_analysis(volume, args.repeats)
            out["speed"] = {"series": name, "shape": list(volume.shape), **timing}
        result = analyse_ct(volume)
        rep = result.report
        row = {
            "shape": list(volume.shape),
            "lung_ml": rep.lung_ml,
            "lesion_ml": rep.lesion_ml,
            "ggo_ml": rep.ggo_ml,
            "consolidation_ml": rep.consolidation_ml,
            "involvement": rep.involvement,
            "severity_total": rep.severity_total,
            "distribution": rep.distribution,
            "pattern": rep.pattern.category,
            "pattern_rule": rep.pattern.rule,
        }
        if name in CT_MD:
            labels = slice_labels(path, volume.meta.files)
            if 0 < labels.sum() < labels.size:
                row["slice_auc_involvement"] = auc_with_ci(labels, result.slice_involvement)
                row["slice_auc_score"] = auc_with_ci(labels, result.slice_score)
                if args.checkpoint:
                    row["slice_auc_cnn"] = auc_with_ci(labels, cnn_slice_scores(args.checkpoint, volume))
            else:
                row["slice_labels"] = f"{int(labels.sum())} of {labels.size} slices with infection: no AUC"
        out["series"][name] = row
        print(name, json.dumps(row)[:400], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(json.dumps(out.get("speed"), indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
