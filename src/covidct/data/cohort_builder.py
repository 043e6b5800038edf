"""Build one binary COVID-19 vs non-COVID cohort from every real source under a data root.

Label space: **binary** (``COVID-19`` / ``Non-COVID``, `covidct.classes.CLASSES_BINARY`). It is the
only one every source supports: UCSD COVID-CT is COVID vs non-COVID (its non-COVID mixes normal and
other disease), Inf-Net and ieee8023 hold only COVID-19, LIDC-IDRI and the Kaggle set only Normal.
COVID-CT-MD's CAP series is Non-COVID here; its own class is kept in the ``finding`` column.

Sources (folder under the root -> rule):

============================  =====================================================================
``ucsd-covid-ct``             every image of ``CT_COVID`` (COVID-19) / ``CT_NonCOVID`` (Non-COVID).
                              No patient ids: each image is its own patient (leakage caveat).
``covid-ct-md``               COVIDx CT rule with the radiologists' ``*_slice_labels.csv``: the
                              infection=1 slices of the COVID-19 and CAP series, the lung slices of
                              the Normal series. Rows are matched to slices by DICOM file name.
``inf-net``                   every COVID slice of ``train/Imgs`` and ``test/Imgs`` (no patient ids).
``lidc-idri-small``           the lung slices of every series (Normal -> Non-COVID), patient = the
                              ``LIDC-IDRI-NNNN`` folder.
``ieee8023-ct``               the ``COVID-19/`` images with ``metadata.csv``'s ``patientid``;
                              ``No_Finding/`` is left out (negative CTs of suspected patients, not a
                              clean control class).
``kaggle-chest-ct-normal``    the lung slices of ``Normal/`` (a few are abdomen/pelvis; no patient ids).
============================  =====================================================================

Lung slices: `lung_fraction` >= ``LUNG_SLICE_MIN_FRACTION`` on the lung-windowed slice (HU series
and 8-bit images through the same window: HU -> `LungWindow`, 8-bit as it is).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from covidct.classes import COVID, NON_COVID
from covidct.errors import CohortError, NoDataError
from covidct.io import read_image, read_volume
from covidct.io.images import is_image, natural_key
from covidct.preprocessing.lung_intensity import enclosed_dark_mask
from covidct.preprocessing.transforms import LungWindow

COHORT_LABELS = (NON_COVID, COVID)
LUNG_SLICE_MIN_FRACTION = 0.05
"""A slice is a lung slice when dark (air-like) pixels enclosed by the body cover this fraction of the
image. Mid-lung slices measure 0.11-0.18 on COVID-CT-MD normal001 and LIDC; 0.05 keeps apex and base
slices, and drops Kaggle's pelvis image (0.001). It also drops one Kaggle lung slice whose body is cut
by the image border (nothing is enclosed)."""
NO_PATIENT_IDS = "no patient ids: each image counts as its own patient (patient leakage possible)"

SOURCE_UCSD = "UCSD"
SOURCE_CTMD = "COVID-CT-MD"
SOURCE_INFNET = "Inf-Net"
SOURCE_LIDC = "LIDC-IDRI"
SOURCE_IEEE = "ieee8023"
SOURCE_KAGGLE = "Kaggle"


@dataclass(frozen=True)
class CohortRow:
    """One row of the cohort manifest (one 2D slice: an image file, or a slice of a DICOM series).

    ``slice_index`` indexes the series read by `read_volume` (superior -> inferior); ``finding`` is
    the source's own class name (e.g. CAP) before mapping to the binary label.
    """

    case_id: str
    path: str
    label: str
    patient_id: str
    source: str
    finding: str
    slice_index: int | None = None
    split: str = ""


# ----------------------------------------------------------------------------- lung slices
def lung_fraction(grey: np.ndarray) -> float:
    """Fraction of a lung-windowed grey slice (H, W; 0..255) that is dark tissue enclosed by the body
    (`enclosed_dark_mask`); air outside the body does not count."""
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2:
        raise CohortError(f"lung_fraction expects one 2D slice (H, W), got shape {grey.shape}.")
    return float(enclosed_dark_mask(grey).sum()) / float(grey.size)


def _grey(slice_values: np.ndarray, is_hu: bool) -> np.ndarray:
    """HU -> the lung window (-600/1500) as 0..255; 8-bit images as they are."""
    if is_hu:
        return LungWindow()(slice_values)
    return np.asarray(slice_values, dtype=np.float32)


def is_lung_slice(slice_values: np.ndarray, is_hu: bool) -> bool:
    return lung_fraction(_grey(slice_values, is_hu)) >= LUNG_SLICE_MIN_FRACTION


# ----------------------------------------------------------------------------- sources
def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and is_image(p)), key=lambda p: natural_key(p.name)
    )


def _image_rows(folder: Path, source: str, label: str, finding: str, prefix: str) -> list[CohortRow]:
    return [
        CohortRow(f"{source}/{prefix}{p.name}", str(p), label, f"{source}:{prefix}{p.stem}", source, finding)
        for p in _images(folder)
    ]


def ucsd_rows(root: Path) -> list[CohortRow]:
    """UCSD COVID-CT: CT_COVID -> COVID-19, CT_NonCOVID -> Non-COVID; one patient per image."""
    folder = root / "ucsd-covid-ct"
    return _image_rows(folder / "CT_COVID", SOURCE_UCSD, COVID, "COVID", "CT_COVID/") + _image_rows(
        folder / "CT_NonCOVID", SOURCE_UCSD, NON_COVID, "NonCOVID", "CT_NonCOVID/"
    )


CTMD_SERIES = (
    ("COVID-19", COVID, "infection"),
    ("CAP", NON_COVID, "infection"),
    ("Normal", NON_COVID, "lung"),
)
"""COVID-CT-MD class folder -> binary label and the COVIDx CT slice rule (infection or lung slices)."""


def _slice_labels(csv_path: Path) -> dict[str, int]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"file", "infection"} <= set(rows[0]):
        raise CohortError(f"{csv_path}: expected columns file,instance_number,slice_location,infection.")
    return {r["file"].strip(): int(r["infection"]) for r in rows}


def ctmd_rows(root: Path) -> list[CohortRow]:
    """COVID-CT-MD: each series with its ``<series>_slice_labels.csv`` beside it (COVIDx CT rule)."""
    rows: list[CohortRow] = []
    for class_dir, label, rule in CTMD_SERIES:
        folder = root / "covid-ct-md" / class_dir
        if not folder.is_dir():
            continue
        for series in sorted(p for p in folder.iterdir() if p.is_dir()):
            labels_csv = folder / f"{series.name}_slice_labels.csv"
            if not labels_csv.is_file():
                raise CohortError(
                    f"{series} has no {labels_csv.name}; the slice labels decide which slices count."
                )
            rows += _ctmd_series_rows(series, _slice_labels(labels_csv), label, class_dir, rule)
    return rows


def _ctmd_series_rows(
    series: Path, infection: dict[str, int], label: str, finding: str, rule: str
) -> list[CohortRow]:
    volume = read_volume(series)
    files = [Path(f).name for f in volume.meta.files]
    missing = [f for f in files if f not in infection]
    if missing:
        raise CohortError(
            f"{series}: slice label rows missing for {len(missing)} file(s), e.g. {missing[0]}."
        )
    rows = []
    for index, name in enumerate(files):
        keep = (
            infection[name] == 1 if rule == "infection" else is_lung_slice(volume.array[index], volume.is_hu)
        )
        if keep:
            rows.append(
                CohortRow(
                    f"{SOURCE_CTMD}/{series.name}/{index:04d}",
                    str(series),
                    label,
                    f"{SOURCE_CTMD}:{series.name}",
                    SOURCE_CTMD,
                    finding,
                    index,
                )
            )
    return rows


def infnet_rows(root: Path) -> list[CohortRow]:
    """Inf-Net (COVID-SemiSeg): every slice of train/Imgs and test/Imgs is COVID-19."""
    folder = root / "inf-net"
    return _image_rows(folder / "train" / "Imgs", SOURCE_INFNET, COVID, "COVID", "train/") + _image_rows(
        folder / "test" / "Imgs", SOURCE_INFNET, COVID, "COVID", "test/"
    )


def lidc_rows(root: Path) -> list[CohortRow]:
    """LIDC-IDRI: the lung slices of every series under ``LIDC-IDRI-NNNN/<study>/<series>/``."""
    folder = root / "lidc-idri-small"
    rows: list[CohortRow] = []
    if not folder.is_dir():
        return rows
    for patient in sorted(p for p in folder.iterdir() if p.is_dir()):
        series_dirs = sorted({f.parent for f in patient.rglob("*.dcm")})
        for series in series_dirs:
            volume = read_volume(series)
            for index in range(volume.num_slices):
                if is_lung_slice(volume.array[index], volume.is_hu):
                    rows.append(
                        CohortRow(
                            f"{SOURCE_LIDC}/{patient.name}/{series.name[-8:]}/{index:04d}",
                            str(series),
                            NON_COVID,
                            f"{SOURCE_LIDC}:{patient.name}",
                            SOURCE_LIDC,
                            "Normal",
                            index,
                        )
                    )
    return rows


def ieee_rows(root: Path) -> list[CohortRow]:
    """ieee8023 covid-chestxray-dataset CT images: COVID-19/ with ``metadata.csv`` patient ids."""
    folder = root / "ieee8023-ct"
    meta = folder / "metadata.csv"
    if not meta.is_file():
        return []
    with open(meta, newline="", encoding="utf-8") as fh:
        patient_of = {r["filename"].strip(): r["patientid"].strip() for r in csv.DictReader(fh)}
    rows = []
    for p in _images(folder / "COVID-19"):
        if p.name not in patient_of:
            raise CohortError(f"{p} has no row in {meta}; its patient id is unknown.")
        rows.append(
            CohortRow(
                f"{SOURCE_IEEE}/{p.name}",
                str(p),
                COVID,
                f"{SOURCE_IEEE}:{patient_of[p.name]}",
                SOURCE_IEEE,
                "COVID-19",
            )
        )
    return rows


def kaggle_rows(root: Path) -> list[CohortRow]:
    """Kaggle chest CT 'normal': the images that are lung slices (the set holds abdomen/pelvis too)."""
    rows = _image_rows(root / "kaggle-chest-ct-normal" / "Normal", SOURCE_KAGGLE, NON_COVID, "Normal", "")
    return [r for r in rows if is_lung_slice(read_image(r.path), False)]


SOURCES: dict[str, Callable[[Path], list[CohortRow]]] = {
    SOURCE_UCSD: ucsd_rows,
    SOURCE_CTMD: ctmd_rows,
    SOURCE_INFNET: infnet_rows,
    SOURCE_LIDC: lidc_rows,
    SOURCE_IEEE: ieee_rows,
    SOURCE_KAGGLE: kaggle_rows,
}
"""Source name -> row builder. Patient-id caveats: UCSD, Inf-Net and Kaggle have none (`NO_PATIENT_IDS`)."""
SOURCES_WITHOUT_PATIENT_IDS = (SOURCE_UCSD, SOURCE_INFNET, SOURCE_KAGGLE)


# ----------------------------------------------------------------------------- build + write
def build_cohort(root: str | os.PathLike[str], *, sources: list[str] | None = None) -> list[CohortRow]:
    """Rows of every source found under ``root`` (or only ``sources``), in `SOURCES` order.

    Raises:
        CohortError: an unknown source name. NoDataError: no rows at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise NoDataError(
            f"Data root {root} does not exist; pass the folder holding ucsd-covid-ct/, covid-ct-md/, ..."
        )
    chosen = list(SOURCES) if not sources else sources
    unknown = [s for s in chosen if s not in SOURCES]
    if unknown:
        raise CohortError(f"Unknown source(s) {unknown}; valid: {', '.join(SOURCES)}.")
    rows = [row for name in chosen for row in SOURCES[name](root)]
    if not rows:
        raise NoDataError(
            f"No source folders with cases under {root}; expected some of: {', '.join(SOURCES)}."
        )
    return rows


def write_cohort(rows: list[CohortRow], out: str | os.PathLike[str]) -> Path:
    """Write the manifest CSV (paths relative to its folder, so it can move with the data root)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = [f.name for f in fields(CohortRow)]
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            values = asdict(row)
            values["path"] = os.path.relpath(Path(row.path).resolve(), out.parent.resolve())
            values["slice_index"] = "" if row.slice_index is None else row.slice_index
            writer.writerow(values)
    return out


def cohort_counts(rows: list[CohortRow]) -> dict[str, dict[str, int]]:
    """Per source: slices per label and number of patients."""
    out: dict[str, dict[str, int]] = {}
    for source in dict.fromkeys(r.source for r in rows):
        mine = [r for r in rows if r.source == source]
        counts = Counter(r.label for r in mine)
        out[source] = {
            **{k: counts.get(k, 0) for k in COHORT_LABELS},
            "patients": len({r.patient_id for r in mine}),
        }
    return out
