"""Read speed of covidct's DICOM reader vs SimpleITK's ImageSeriesReader (GDCM file names).

Series: COVID-CT-MD P001 (148 JPEG Lossless slices, ../shared/data) and a 300-slice uncompressed
512x512 synthetic series written with pydicom to a temporary folder. Each reader runs 3 times in the
same process, interleaved; the best wall time and the process CPU time of that run are reported.

    .venv/bin/python benchmarks/io_bench.py  ->  benchmarks/out/io_bench.json
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from covidct.io import read_volume
from covidct.io.dicom import decoding as covidct_dicom

REPO = Path(__file__).resolve().parents[1]
P001 = REPO.parent / "shared" / "data" / "covid-ct-md" / "COVID-19" / "P001"
OUT = REPO / "benchmarks" / "out" / "io_bench.json"
REPEATS = 3
SYNTH_SHAPE = (300, 512, 512)
SYNTH_SPACING = (1.25, 0.7, 0.7)
INTERCEPT = -1024


def write_synthetic_series(out_dir: Path, shape: tuple[int, int, int] = SYNTH_SHAPE, seed: int = 0) -> None:
    """Uncompressed explicit VR LE CT series, one file per slice, names not in slice order."""
    rng = np.random.default_rng(seed)
    series, study = generate_uid(), generate_uid()
    order = rng.permutation(shape[0])
    for k in range(shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-180.0, -180.0, -k * SYNTH_SPACING[0]]
        ds.PixelSpacing = list(SYNTH_SPACING[1:])
        ds.SliceThickness = SYNTH_SPACING[0]
        ds.Rows, ds.Columns = shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = INTERCEPT, 1
        ds.PixelData = rng.integers(0, 2500, size=shape[1:], dtype=np.uint16).tobytes()
        ds.save_as(out_dir / f"slice_{order[k]:04d}.dcm", enforce_file_format=True)


def read_sitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(folder: Path, readers: dict[str, Callable[[Path], object]]) -> dict[str, dict[str, float]]:
    """Best-of-REPEATS wall seconds (and that run's CPU seconds) per reader, runs interleaved."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in readers}
    for _ in range(REPEATS):
        for name, fn in readers.items():
            runs[name].append(timed(lambda fn=fn: fn(folder)))
    return {name: {"wall_s": round(min(r)[0], 3), "cpu_s": round(min(r)[1], 3)} for name, r in runs.items()}


def covidct_without_imagecodecs(folder: Path) -> object:
    original = covidct_dicom._fast_codec
    covidct_dicom._fast_codec = lambda: None
    try:
        return read_volume(folder)
    finally:
        covidct_dicom._fast_codec = original


def main() -> None:
    readers: dict[str, Callable[[Path], object]] = {"covidct": read_volume, "simpleitk": read_sitk}
    results: dict[str, object] = {}
    if P001.is_dir():
        p001 = compare(P001, {**readers, "covidct_pylibjpeg_only": covidct_without_imagecodecs})
        results["p001_jpeg_lossless_148"] = p001
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_series(Path(tmp))
        results["synthetic_uncompressed_300"] = compare(Path(tmp), readers)
    for case, res in results.items():
        res["ratio_wall_covidct_over_sitk"] = round(res["covidct"]["wall_s"] / res["simpleitk"]["wall_s"], 2)
        res["ratio_cpu_covidct_over_sitk"] = round(res["covidct"]["cpu_s"] / res["simpleitk"]["cpu_s"], 2)
        print(case, json.dumps(res))
    try:
        import imagecodecs

        codec = f"imagecodecs {imagecodecs.__version__}"
    except ImportError:
        codec = "none (pylibjpeg only)"
    results["machine"] = (
        f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}"
    )
    results["fast_jpeg_lossless_codec"] = codec
    results["decode_workers"] = covidct_dicom.DEFAULT_WORKERS
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
