"""DICOM objects that carry a covidct result back to PACS: a Comprehensive SR and Secondary Captures.

Both belong to the source study (same StudyInstanceUID and patient module) and live in new series.
The SR holds the finding (predicted class) and one probability per class when a model ran, the
quantitative-CT measurements (lung and lesion volumes in ml, involvement in %, severity scores) and
the rule-based pattern suggestion when the scan was in HU, the algorithm name and version, and the
research-use statement. Secondary Captures carry key slices with the explanation
overlay burnt in. Built with highdicom (the ``dicom-net`` extra).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from covidct import RESEARCH_USE_STATEMENT, __version__
from covidct.errors import ServiceError
from covidct.extras import require_extra
from covidct.io.masks import TYPE2_DEFAULTS  # Type 2 attributes highdicom reads; absent ones become empty

MANUFACTURER = "covidct"
PRIVATE_SCHEME = "99COVIDCT"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
SR_SERIES_DESCRIPTION = "covidct AI result (research use only)"
SC_SERIES_DESCRIPTION = "covidct key images (research use only)"
RGB_CHANNELS = 3
BITS_PER_SAMPLE = 8
MAX_LO_CHARS = 64
MAX_UT_CHARS = 1024

# Coded concepts (DCM, LOINC, SNOMED CT) of the report tree.
REPORT_TITLE = ("18747-6", "LN", "CT Report")
FINDING = ("121071", "DCM", "Finding")
ALGORITHM_NAME = ("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = ("111003", "DCM", "Algorithm Version")
COMMENT = ("121106", "DCM", "Comment")
NO_UNITS = ("1", "UCUM", "no units")
UCUM_UNITS = {"ml": ("ml", "UCUM", "milliliter"), "%": ("%", "UCUM", "percent"),
              "{score}": ("{score}", "UCUM", "score")}
MEASUREMENT_CODE_PREFIX = "QCT-"
MEASUREMENT_CODE_HEX = 8
REFERENCED_SEGMENT = ("121191", "DCM", "Referenced Segment")
LUNGS, LESIONS = ("right lung", "left lung"), ("ground-glass opacity", "consolidation")
MEASUREMENT_SEGMENTS: dict[str, tuple[str, ...]] = {
    "right lung volume": ("right lung",), "left lung volume": ("left lung",), "total lung volume": LUNGS,
    "ground-glass volume": ("ground-glass opacity",), "consolidation volume": ("consolidation",),
    "right lung involvement": ("right lung", *LESIONS), "left lung involvement": ("left lung", *LESIONS),
    "total lung involvement": (*LUNGS, *LESIONS),
}
"""Quantitative-CT measurement -> the SEG segments (`covidct.io.masks.SEGMENTS` labels) it was measured
on; the SR links each to the SEG (INFERRED FROM a 'Referenced Segment' image reference)."""
CLASS_CODES: dict[str, tuple[str, str, str]] = {
    "COVID-19": ("840539006", "SCT", "COVID-19"),
    "Pneumonia": ("233604007", "SCT", "Pneumonia"),
    "Normal": ("17621005", "SCT", "Normal"),
}

# Patient / study attributes copied from the source beyond what highdicom copies itself.
EXTRA_COPIED = ("IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAge", "PatientSize",
                "PatientWeight", "EthnicGroup", "PatientComments", "StudyDescription")
EVIDENCE_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
                 "SpecificCharacterSet")


@dataclass(frozen=True)
class ExportResult:
    """What the DICOM exports need from a result (a dict, a `StudyResult` or any dataclass)."""

    predicted_class: str | None
    probabilities: dict[str, float]
    model_name: str
    model_version: str
    key_images: list[tuple[int, np.ndarray]] = field(default_factory=list)
    measurements: list[Any] = field(default_factory=list)
    """`covidct.service.quantitative.Measurement` (name, value, UCUM unit) of the quantitative CT."""
    notes: list[str] = field(default_factory=list)
    """Text items: quantitative summary, the pattern suggestion with its rule and label, and per model
    what it is known to do on a source it never saw (`evaluation.validity`)."""


def export_result(result: Any) -> ExportResult:
    """Normalise a result to `ExportResult`.

    Key images come from ``key_images`` [(slice_index, RGB array)] or, for a Predictor
    `StudyResult`, from its ``overlays`` {slice_index: PNG bytes}.
    """
    from covidct.service.quantitative import measurements

    get = result.get if isinstance(result, Mapping) else (lambda k, d=None: getattr(result, k, d))
    quant = get("quantitative") or {}
    needed = ["model_name", "model_version"]
    if not quant.get("available"):  # without quantitative CT the model's class is the whole result
        needed += ["predicted_class", "probabilities"]
    missing = [k for k in needed if get(k) is None]
    if missing:
        raise ServiceError(f"The analysis result lacks {', '.join(missing)}; the DICOM export needs "
                           "model_name, model_version, and predicted_class with probabilities {class: p} "
                           "or an available quantitative-CT section.")
    probabilities = {str(k): float(v) for k, v in dict(get("probabilities") or {}).items()}
    keys = [(int(i), as_rgb(img)) for i, img in (get("key_images") or [])]
    keys += [(int(i), as_rgb(png)) for i, png in sorted(dict(get("overlays") or {}).items())]
    notes = []
    if quant.get("available"):
        pattern = quant["pattern"]
        notes = [f"Quantitative CT: {quant['summary']}",
                 f"Pattern suggestion: {pattern['category']} ({pattern['rule']}); {pattern['label']}",
                 f"Severity score convention: {quant['severity_convention']}"]
    elif quant:
        notes = [f"Quantitative CT {quant.get('reason', 'not available')}"]
    notes += [f"On sources it never saw: {v['statement']}"
              for v in get("validity") or [] if v.get("statement")]
    predicted = get("predicted_class")
    return ExportResult(None if predicted is None else str(predicted), probabilities, str(get("model_name")),
                        str(get("model_version")), keys, measurements(quant), notes)


def as_rgb(image: np.ndarray | bytes) -> np.ndarray:
    """An (H, W, 3) uint8 array from PNG/JPEG bytes, a grey (H, W) or an RGB(A) array."""
    if isinstance(image, bytes | bytearray):
        from PIL import Image

        with Image.open(io.BytesIO(image)) as img:
            image = np.asarray(img.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], RGB_CHANNELS, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (RGB_CHANNELS, RGB_CHANNELS + 1):
        raise ServiceError(f"A key image must be (H, W, 3) RGB or (H, W) grey, but it has shape {arr.shape}.")
    if arr.dtype != np.uint8:
        raise ServiceError(f"A key image must be uint8 (0..255), but it is {arr.dtype}; scale it first.")
    return np.ascontiguousarray(arr[..., :RGB_CHANNELS])


def require_highdicom() -> Any:
    """The highdicom module, or a `MissingExtraError` saying how to install it."""
    require_extra("dicom-net", "highdicom", feature="DICOM SR/Secondary Capture export")
    import highdicom

    return highdicom


def _code(concept: tuple[str, str, str]) -> Any:
    from highdicom.sr import CodedConcept

    value, scheme, meaning = concept
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def class_concept(name: str) -> Any:
    """The coded concept of a class: SNOMED CT where one fits, else covidct's private scheme."""
    return _code(CLASS_CODES.get(name, (name.upper().replace(" ", "-")[:16], PRIVATE_SCHEME, name)))


def _probability_concept(name: str) -> Any:
    code = f"P-{name.upper().replace(' ', '-')}"[:16]
    return _code((code, PRIVATE_SCHEME, f"Probability of {name}"))


def measurement_concept(name: str) -> Any:
    """A stable private code for a quantitative-CT measurement (the name is its meaning)."""
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:MEASUREMENT_CODE_HEX].upper()
    return _code((f"{MEASUREMENT_CODE_PREFIX}{digest}", PRIVATE_SCHEME, name[:MAX_LO_CHARS]))


def _evidence(source: Dataset) -> Dataset:
    """A header-only copy with the identifiers and the Type 2 attributes highdicom reads."""
    missing = [k for k in EVIDENCE_KEYS[:4] if k not in source]
    if missing:
        raise ServiceError(f"A source instance lacks {', '.join(missing)}; cannot reference it in the SR.")
    item = Dataset()
    for key in EVIDENCE_KEYS + tuple(TYPE2_DEFAULTS) + EXTRA_COPIED:
        if key in source:
            setattr(item, key, source[key].value)
    for key, default in TYPE2_DEFAULTS.items():
        if item.get(key) is None:
            setattr(item, key, default)
    return item


def _copy_extra(source: Dataset, target: Dataset) -> None:
    for key in EXTRA_COPIED:
        if key in source and key not in target:
            setattr(target, key, source[key].value)


def _segment_reference(name: str, segmentation: Dataset | None) -> list[Any]:
    """[the INFERRED FROM reference to the SEG segments measurement ``name`` was measured on], or []."""
    from highdicom.sr import ImageContentItem, RelationshipTypeValues

    from covidct.io.masks import SEGMENTS

    labels = MEASUREMENT_SEGMENTS.get(name)
    if segmentation is None or not labels:
        return []
    numbers = [s.number for s in SEGMENTS if s.label in labels]
    return [ImageContentItem(name=_code(REFERENCED_SEGMENT),
                             referenced_sop_class_uid=segmentation.SOPClassUID,
                             referenced_sop_instance_uid=segmentation.SOPInstanceUID,
                             referenced_segment_numbers=numbers,
                             relationship_type=RelationshipTypeValues.INFERRED_FROM)]


def _measurement(m: Any, segmentation: Dataset | None) -> Any:
    from highdicom.sr import NumContentItem, RelationshipTypeValues

    item = NumContentItem(name=measurement_concept(m.name), value=round(float(m.value), 4),
                          unit=_code(UCUM_UNITS[m.unit]), relationship_type=RelationshipTypeValues.CONTAINS)
    reference = _segment_reference(m.name, segmentation)
    if reference:
        item.ContentSequence = reference
    return item


def _content_tree(summary: ExportResult, segmentation: Dataset | None = None) -> Any:
    from highdicom.sr import (
        CodeContentItem,
        ContainerContentItem,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )

    contains = RelationshipTypeValues.CONTAINS
    items: list[Any] = []
    if summary.predicted_class is not None:
        items.append(CodeContentItem(name=_code(FINDING), value=class_concept(summary.predicted_class),
                                     relationship_type=contains))
    items += [NumContentItem(name=_probability_concept(name), value=round(p, 6), unit=_code(NO_UNITS),
                             relationship_type=contains)
              for name, p in summary.probabilities.items()]
    items += [_measurement(m, segmentation) for m in summary.measurements]
    items += [TextContentItem(name=_code(COMMENT), value=note[:MAX_UT_CHARS], relationship_type=contains)
              for note in summary.notes]
    items += [TextContentItem(name=_code(ALGORITHM_NAME), value=summary.model_name,
                              relationship_type=contains),
              TextContentItem(name=_code(ALGORITHM_VERSION), value=summary.model_version,
                              relationship_type=contains),
              TextContentItem(name=_code(COMMENT), value=RESEARCH_USE_STATEMENT, relationship_type=contains)]
    # SEPARATE: the items are distinct findings and measurements, not one narrative, so viewers (OHIF)
    # show each with its concept name ("total lung involvement: 3.1 %").
    root = ContainerContentItem(name=_code(REPORT_TITLE), template_id=None, is_content_continuous=False)
    root.ContentSequence = items
    return root


def build_structured_report(source_datasets: Sequence[Dataset], result: Any, *,
                            series_uid: str | None = None, sop_instance_uid: str | None = None,
                            series_number: int = SR_SERIES_NUMBER,
                            segmentation: Dataset | None = None) -> Dataset:
    """A Comprehensive SR of ``result`` in the study of ``source_datasets`` (headers suffice).

    Same StudyInstanceUID and patient module as the source, a new series; content: finding,
    probability per class, algorithm name and version, research-use statement. With ``segmentation``
    (the study's DICOM SEG, `covidct.service.masks.study_segmentation`), each lung and lesion measurement
    references the SEG segments it was measured on, and the SEG is listed in the SR's evidence.
    """
    if not source_datasets:
        raise ServiceError("No source instances given; the SR must belong to the analysed series' study.")
    require_highdicom()
    from highdicom.sr import ComprehensiveSR

    summary = export_result(result)
    derived = [] if segmentation is None else [segmentation]
    evidence = [_evidence(ds) for ds in (*source_datasets, *derived)]
    studies = {ds.StudyInstanceUID for ds in evidence}
    if len(studies) != 1:
        raise ServiceError(f"The source instances span {len(studies)} studies; send one study per SR.")
    sr = ComprehensiveSR(
        evidence=evidence, content=_content_tree(summary, segmentation),
        series_instance_uid=series_uid or generate_uid(),
        series_number=series_number, sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SR_SERIES_DESCRIPTION, software_versions=__version__)
    _copy_extra(source_datasets[0], sr)
    return sr


def build_secondary_capture(source_dataset: Dataset, rgb_image_uint8: np.ndarray, series_uid: str,
                            instance_number: int, description: str) -> Dataset:
    """A Secondary Capture (RGB) of a key image in the source study, in series ``series_uid``.

    It references the source slice (Source Image Sequence) and says it is for research use.
    """
    require_highdicom()
    from highdicom.sc import SCImage

    rgb = as_rgb(rgb_image_uint8)
    ref = _evidence(source_dataset)
    sc = SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=BITS_PER_SAMPLE,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=SC_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"), series_description=SC_SERIES_DESCRIPTION,
        software_versions=__version__)
    sc.DerivationDescription = description[:1024]
    sc.ImageComments = f"{description} {RESEARCH_USE_STATEMENT}"[:10240]
    src = Dataset()
    src.ReferencedSOPClassUID = ref.SOPClassUID
    src.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    sc.SourceImageSequence = [src]
    _copy_extra(source_dataset, sc)
    return sc


def slice_order(source_datasets: Sequence[Dataset]) -> list[Dataset]:
    """Source instances in covidct's slice order (superior to inferior), as `Volume` indexes them."""

    def key(ds: Dataset) -> tuple[float, int]:
        position = ds.get("ImagePositionPatient")
        z = -float(position[2]) if position is not None and len(position) == RGB_CHANNELS else 0.0
        return z, int(ds.get("InstanceNumber") or 0)

    return sorted(source_datasets, key=key)


def build_key_images(source_datasets: Sequence[Dataset], result: Any, *,
                     series_uid: str | None = None) -> list[Dataset]:
    """One Secondary Capture per key image of ``result``, all in one new series."""
    summary = export_result(result)
    if not summary.key_images:
        return []
    ordered = slice_order(source_datasets)
    series_uid = series_uid or generate_uid()
    out = []
    for number, (index, rgb) in enumerate(summary.key_images, start=1):
        source = ordered[index] if 0 <= index < len(ordered) else ordered[len(ordered) // 2]
        shown = source.get("InstanceNumber")  # the number PACS shows for the source image
        label = f"image {shown} (InstanceNumber)" if shown is not None else f"slice {index + 1} (position)"
        if summary.predicted_class is None:
            text = f"covidct {summary.model_name} key {label}: ground glass yellow, consolidation red"
        else:
            text = (f"covidct {summary.model_name} key {label}: {summary.predicted_class} "
                    f"({summary.probabilities.get(summary.predicted_class, float('nan')):.3f})")
        out.append(build_secondary_capture(source, rgb, series_uid, number, text))
    return out
