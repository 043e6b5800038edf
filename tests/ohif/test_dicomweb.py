"""Orthanc's DICOMweb serves covidct's study the way OHIF reads it: QIDO-RS lists the CT, SEG and SR
series; WADO-RS returns the SEG, whose frames put covidct's lesions back on the right CT slices and
pixels, and the SR with the quantitative-CT measurements."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import SegmentationStorage
from tests.ohif.conftest import (
    MODALITY_TAG,
    PATIENT_ID,
    SERIES_INSTANCE_UID_TAG,
    CovidctStudy,
    DicomWebOrthanc,
    wado_instance,
)

pytestmark = pytest.mark.integration

PERCENT = 100.0
SR_DECIMALS_TOLERANCE = 1e-3


def series_by_modality(orthanc: DicomWebOrthanc, study_uid: str) -> dict[str, str]:
    """{modality: SeriesInstanceUID} from QIDO-RS (one series per modality here)."""
    found = orthanc.dicomweb_json(f"studies/{study_uid}/series")
    return {s[MODALITY_TAG]["Value"][0]: s[SERIES_INSTANCE_UID_TAG]["Value"][0] for s in found}


def test_qido_lists_the_study_and_its_three_series(dicomweb_orthanc: DicomWebOrthanc,
                                                    study_in_orthanc: CovidctStudy) -> None:
    studies = dicomweb_orthanc.dicomweb_json(f"studies?PatientID={PATIENT_ID}")
    assert [s["0020000D"]["Value"][0] for s in studies] == [study_in_orthanc.study_uid]
    series = series_by_modality(dicomweb_orthanc, study_in_orthanc.study_uid)
    assert sorted(series) == ["CT", "SEG", "SR"]
    assert series["CT"] == study_in_orthanc.ct_series_uid


def test_wado_seg_puts_the_lesions_back_on_the_ct_grid(dicomweb_orthanc: DicomWebOrthanc,
                                                       study_in_orthanc: CovidctStudy) -> None:
    """Round trip: covidct's label maps -> SEG -> Orthanc -> WADO-RS -> label maps per CT instance."""
    from covidct.io.masks import SEGMENTS, read_segmentation_labels

    study = study_in_orthanc
    series = series_by_modality(dicomweb_orthanc, study.study_uid)
    seg = wado_instance(dicomweb_orthanc, study.study_uid, series["SEG"])
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.StudyInstanceUID == study.study_uid
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [study.ct_series_uid]
    assert [str(d.SegmentLabel) for d in seg.SegmentSequence] == [s.label for s in SEGMENTS]
    lung, lesion = read_segmentation_labels(seg, study.sop_uids)
    np.testing.assert_array_equal(lesion, study.lesion_labels)
    np.testing.assert_array_equal(lung, study.lung_labels)


def _num_items(sr: object) -> dict[str, float]:
    nums = [item for item in sr.ContentSequence if item.ValueType == "NUM"]
    return {str(n.ConceptNameCodeSequence[0].CodeMeaning): float(n.MeasuredValueSequence[0].NumericValue)
            for n in nums}


def test_wado_sr_carries_the_measurements(dicomweb_orthanc: DicomWebOrthanc,
                                          study_in_orthanc: CovidctStudy) -> None:
    study = study_in_orthanc
    series = series_by_modality(dicomweb_orthanc, study.study_uid)
    sr = wado_instance(dicomweb_orthanc, study.study_uid, series["SR"])
    assert sr.StudyInstanceUID == study.study_uid
    assert sr.ContinuityOfContent == "SEPARATE", "OHIF names each item only in a SEPARATE container"
    values = _num_items(sr)
    quant = study.result["quantitative"]
    assert values["total lung involvement"] == pytest.approx(PERCENT * quant["involvement"]["total"],
                                                            abs=SR_DECIMALS_TOLERANCE)
    assert values["CT severity score total"] == quant["severity_total"]
