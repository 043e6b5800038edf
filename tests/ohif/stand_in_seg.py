"""STAND-IN, test code only: a DICOM SEG of covidct's lesion labels built here with highdicom.

It exists only until covidct's own SEG writer (branch ``masks``) is merged; the OHIF tests then build
the SEG with that writer. It is not a second product writer: nothing in ``src/`` uses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset

SEG_SERIES_NUMBER = 9903
SEGMENTS = ((1, "ground glass"), (2, "consolidation"))
"""(label value in covidct's lesion map = segment number, segment label)."""


def write_stand_in_seg(ct_datasets: list[Dataset], lesion_labels: np.ndarray, out: Path) -> Path:
    """Write a binary SEG of ``lesion_labels`` ((z, y, x), z superior -> inferior) over ``ct_datasets``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ordered = sorted(ct_datasets, key=lambda ds: -float(ds.ImagePositionPatient[2]))
    algorithm = hd.AlgorithmIdentificationSequence(name="covidct stand-in", version="0",
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm) for number, label in SEGMENTS]
    masks = np.stack([lesion_labels == number for number, _ in SEGMENTS], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=ordered, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="covidct",
        manufacturer_model_name="covidct", software_versions="stand-in", device_serial_number="0",
        series_description="covidct lesions (stand-in)")
    seg.save_as(out)
    return out
