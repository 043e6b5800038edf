"""A study's masks in the service: the quantitative CT's lung and lesion labels as NIfTI + DICOM SEG.

`write_study_masks(result, out_dir)` writes them beside the report (`covidct predict`, triage) or into
a job folder (the API serves the SEG) and records their file names in ``result.masks``;
`study_segmentation(result, sources)` builds the SEG the DICOM node sends with its SR. Neither ever
fails a study: a scan whose geometry the writer refuses, or one without quantitative CT, gets a
warning on the result saying why no mask was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset

from covidct.errors import ConfigError, MaskGeometryError
from covidct.io.masks import (
    SEGMENTS,
    build_segmentation,
    volume_source_datasets,
    write_masks,
)

SEGMENT_NUMBERS = {s.label: s.number for s in SEGMENTS}
"""Segment label -> segment number in the SEG ('right lung' 1, 'left lung' 2, ...)."""


def _labels(result: Any) -> tuple[Any, Any, Any] | None:
    volume = getattr(result, "volume", None)
    lungs, lesions = getattr(result, "lung_labels", None), getattr(result, "lesion_labels", None)
    if volume is None or lungs is None or lesions is None:
        return None
    return volume, lungs, lesions


def write_study_masks(result: Any, out_dir: Path) -> dict[str, Any] | None:
    """Write ``lungs.nii.gz``, ``lesions.nii.gz`` and (DICOM input) ``segmentation.dcm`` into ``out_dir``.

    Sets and returns ``result.masks`` (file names relative to ``out_dir``, ``seg`` None with
    ``seg_note`` when no SEG was written); None, with a warning on the result, when no mask can be
    written (no quantitative CT, or a geometry `covidct.io.masks` refuses).
    """
    labels = _labels(result)
    if labels is None:
        return None
    volume, lungs, lesions = labels
    try:
        sources = getattr(result, "source_headers", None) or volume_source_datasets(volume)
        try:
            files = write_masks(volume, lungs, lesions, out_dir, source_datasets=sources)
        except ConfigError as exc:  # no highdicom: the NIfTI files still help
            files = write_masks(volume, lungs, lesions, out_dir, source_datasets=sources, seg=False)
            files = type(files)(files.lung_nifti, files.lesion_nifti, None, f"no DICOM Segmentation: {exc}")
    except MaskGeometryError as exc:
        result.warnings.append(f"no masks written: {exc}")
        return None
    masks = {"lung_nifti": files.lung_nifti.name, "lesion_nifti": files.lesion_nifti.name,
             "seg": None if files.seg is None else files.seg.name, "seg_note": files.seg_note,
             "lung_values": {"1": "right lung", "2": "left lung"},
             "lesion_values": {"1": "ground-glass opacity", "2": "consolidation"}}
    result.masks = masks
    return masks


def study_segmentation(result: Any, sources: Sequence[Dataset], *, series_uid: str | None = None,
                       sop_instance_uid: str | None = None) -> Dataset | None:
    """The DICOM SEG of ``result``'s lungs and lesions over ``sources`` (the received instances, any
    order; they are put in the volume's slice order by SOP Instance UID); None when the result has no
    labels. Raises `MaskGeometryError` for a geometry the writer refuses."""
    labels = _labels(result)
    if labels is None:
        return None
    volume, lungs, lesions = labels
    by_uid = {str(ds.get("SOPInstanceUID", "")): ds for ds in sources}
    ordered = [by_uid[uid] for uid in volume.meta.sop_uids if uid in by_uid]
    return build_segmentation(volume, lungs, lesions, ordered, series_uid=series_uid,
                              sop_instance_uid=sop_instance_uid)
