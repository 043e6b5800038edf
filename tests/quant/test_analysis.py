"""Quantitative CT on phantoms whose lesion sits in one known zone of one lung.

The geometry tests compare each planted phantom with the same phantom without the lesion: the
synthetic vessel trees have 13 mm roots inside the lungs, far from the mediastinum, which the HU
rule reads as lesion (about 1 % of the lungs; real normal lungs read 0.0-0.1 %, see the realdata
tests). What the planted lesion *adds* must land in its zone and side, with its volume and shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covidct.errors import QuantError
from covidct.io.volume import Volume
from covidct.quant.analysis import analyse_ct, analysis_unavailable, block_mean, grid_factor
from covidct.quant.regions import peripheral_map
from covidct.quant.severity import ZONES
from covidct.synthetic import add_lesion, make_phantom

SHAPE = (48, 192, 192)
SPACING = (2.5, 1.5, 1.5)
PLANTED = [("right", "upper"), ("right", "lower"), ("left", "upper"), ("left", "middle"), ("left", "lower")]
MAX_VOLUME_ERROR = 0.10
MIN_DICE = 0.8
MIN_ZONE_SHARE = 0.9
SIDES = ("right", "left")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


@pytest.fixture(scope="module")
def normal():
    phantom = make_phantom("Normal", shape=SHAPE, spacing=SPACING, seed=0)
    return phantom, analyse_ct(phantom.volume)


def _added_ml(planted, baseline) -> dict[str, float]:
    """Lesion ml per zone that the planted lesion adds over the lesion-free phantom."""
    zones, base = planted.report.zones, baseline.report.zones
    return {k: zones[k].lesion_ml - base[k].lesion_ml for k in zones}


@pytest.mark.parametrize(("side", "zone"), PLANTED)
def test_planted_lesion_is_found_in_its_zone_and_side(normal, side, zone):
    phantom, baseline = normal
    planted = add_lesion(phantom, side=side, zone=zone)
    result = analyse_ct(planted.volume)
    added = _added_ml(result, baseline)
    key = f"{side} {zone}"
    assert max(added, key=added.get) == key, added
    assert added[key] >= MIN_ZONE_SHARE * sum(max(v, 0.0) for v in added.values()), added
    other = "left" if side == "right" else "right"
    assert result.report.lesion_ml[other] - baseline.report.lesion_ml[other] < 0.05 * added[key]
    # volume and shape, ignoring the voxels the method already flags in the lesion-free phantom
    flagged_before = baseline.lesion_labels() > 0
    found = (result.lesion_labels() > 0) & ~flagged_before
    truth = planted.lesion_mask & ~flagged_before
    assert abs(found.sum() / truth.sum() - 1.0) <= MAX_VOLUME_ERROR, found.sum() / truth.sum()
    assert dice(found, truth) >= MIN_DICE


def test_lung_sides_match_the_phantom(normal):
    phantom, baseline = normal
    labels = baseline.lung_labels_full()
    for lab in (1, 2):  # 1 = patient right = image left for this direction
        assert dice(labels == lab, phantom.lung_mask == lab) >= 0.9
    assert baseline.report.lung_ml["right"] > 0 and baseline.report.lung_ml["left"] > 0


def test_sides_follow_the_direction_not_the_array(normal):
    """Mirroring the array with its x direction keeps each voxel's side; mirroring the array alone swaps."""
    phantom, baseline = normal
    vol = phantom.volume
    planted = add_lesion(phantom, side="left", zone="lower")
    mirrored_dir = np.asarray(vol.direction, float).copy()
    mirrored_dir[:, 0] *= -1
    same_patient = Volume(planted.volume.array[:, :, ::-1].copy(), vol.spacing, direction=mirrored_dir)
    result = analyse_ct(same_patient)
    added_right = result.report.lesion_ml["right"] - baseline.report.lesion_ml["right"]
    assert result.report.lesion_ml["left"] - baseline.report.lesion_ml["left"] > 10 * max(added_right, 0.1)
    unmirrored = result.lung_labels_full()[:, :, ::-1]
    original = analyse_ct(planted.volume).lung_labels_full()
    for lab in (1, 2):  # the same voxels get the same side (up to the merged-lung cut, a few voxels)
        assert dice(unmirrored == lab, original == lab) >= 0.99
    other_patient = Volume(planted.volume.array[:, :, ::-1].copy(), vol.spacing, direction=vol.direction)
    swapped = analyse_ct(other_patient)
    assert swapped.report.lesion_ml["right"] > swapped.report.lesion_ml["left"]


def test_zones_follow_the_craniocaudal_direction(normal):
    """An array stored inferior -> superior (direction says so) still puts an upper lesion upper."""
    phantom, baseline = normal
    planted = add_lesion(phantom, side="right", zone="upper")
    flipped_dir = np.asarray(phantom.volume.direction, float).copy()
    flipped_dir[:, 2] *= -1
    flipped = Volume(planted.volume.array[::-1].copy(), phantom.volume.spacing, direction=flipped_dir)
    zones = analyse_ct(flipped).report.zones
    base = baseline.report.zones
    added = {k: zones[k].lesion_ml - base[k].lesion_ml for k in zones}
    assert max(added, key=added.get) == "right upper", added


@pytest.mark.parametrize("peripheral", [True, False])
def test_peripheral_map_marks_the_outer_lung(normal, peripheral):
    phantom, _ = normal
    planted = add_lesion(phantom, side="right", zone="middle", peripheral=peripheral)
    periph = peripheral_map(phantom.lung_mask, SPACING[1:])
    new = planted.lesion_mask & ~phantom.lesion_mask
    share = np.count_nonzero(new & periph) / np.count_nonzero(new)
    assert share >= 0.7 if peripheral else share <= 0.3, share


def test_normal_phantom_scores_and_report_are_json(normal):
    import json

    _, baseline = normal
    d = baseline.to_dict()
    json.dumps(d)
    assert set(d["zones"]) == {f"{s} {z}" for s in SIDES for z in ZONES}
    assert len(d["slice_involvement"]) == SHAPE[0]
    assert d["pattern"]["label"].endswith("not a diagnosis")
    assert baseline.lesion_labels().shape == SHAPE


def test_8bit_input_is_refused_with_a_clear_message():
    grey = Volume(np.zeros((4, 64, 64), np.float32), (2.0, 1.0, 1.0), is_hu=False)
    with pytest.raises(QuantError, match="Hounsfield"):
        analyse_ct(grey)
    assert analysis_unavailable(grey)["available"] is False


def test_analysis_grid_blocks_average_and_masks_come_back_full_size():
    vol = Volume(np.arange(2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7), (2.0, 0.7, 0.7))
    assert grid_factor(vol) == 2
    small = block_mean(vol, 2)
    assert small.shape == (2, 3, 3) and small.spacing == (2.0, 1.4, 1.4)
    assert small.array[0, 0, 0] == pytest.approx(np.mean([0, 1, 7, 8]))


def test_sides_survive_a_dicom_round_trip(normal, tmp_path):
    """Written as axial DICOM (ImageOrientationPatient from the direction) and read back by the real
    reader, a left lower lesion is still found in the left lower zone."""
    from covidct.io import read_volume
    from covidct.io.dicom_write import write_dicom_series

    phantom, baseline = normal
    planted = add_lesion(phantom, side="left", zone="lower")
    write_dicom_series(planted.volume, tmp_path / "series")
    volume = read_volume(tmp_path / "series")
    assert np.asarray(volume.direction)[0, 0] > 0  # x runs towards patient left: image left = patient right
    added = _added_ml(analyse_ct(volume), baseline)
    assert max(added, key=added.get) == "left lower", added


# ---- real data -------------------------------------------------------------------------------------
REAL_NORMAL_MAX = 0.01
"""normal001 and LIDC-IDRI-0002 must read under 1 % involvement."""
LIDC_NODULE_MAX = 0.025
"""LIDC-IDRI-0001 (a 2-3 cm nodule) and -0003 (nodule + hilar vessel bundles on 11 slices) read 1.0 % and
1.8 % (docs/results.md, issue 12): they miss the 1 % goal; this bound only catches regressions."""
MIN_SLICE_AUC = 0.85
"""In-sample (these parameters were chosen on these series): 0.924 (P001) and 0.894 (cap001) with the
slice score; held-out figures are in docs/results.md. A regression below 0.85 fails."""


@pytest.fixture(scope="module")
def real(shared_data):
    from covidct.io import read_volume

    series = {"P001": "covid-ct-md/COVID-19/P001", "cap001": "covid-ct-md/CAP/cap001",
              "normal001": "covid-ct-md/Normal/normal001"}
    out = {}
    for name, rel in series.items():
        path = shared_data / rel
        if not path.is_dir():
            pytest.skip(f"{path} is absent")
        volume = read_volume(path)
        out[name] = (path, volume, analyse_ct(volume))
    return out


def _infection_labels(path, volume) -> np.ndarray:
    import csv

    with (path.parent / f"{path.name}_slice_labels.csv").open(newline="") as fh:
        by_name = {row["file"]: int(row["infection"]) for row in csv.DictReader(fh)}
    return np.array([by_name[Path(f).name] for f in volume.meta.files])


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["P001", "cap001"])
def test_real_slice_involvement_ranks_infected_slices(real, name):
    from covidct.evaluation.metrics import binary_auc

    path, volume, result = real[name]
    labels = _infection_labels(path, volume)
    assert binary_auc(labels, result.slice_score) >= MIN_SLICE_AUC


@pytest.mark.realdata
def test_real_patients_covid_and_cap_above_normal(real):
    normal = real["normal001"][2].report.involvement["total"]
    assert normal < REAL_NORMAL_MAX
    for name in ("P001", "cap001"):
        assert real[name][2].report.involvement["total"] > 5 * normal, name
    assert real["normal001"][2].report.pattern.category == "negative"


@pytest.mark.realdata
def test_real_normal_anatomy_heart_on_the_left(real):
    """normal001 is standard axial DICOM (x towards patient left): the right lung is on image left, and
    the heart pushes the left lung further from the body midline than the right lung."""
    _, volume, result = real["normal001"]
    assert np.asarray(volume.direction)[0, 0] > 0
    labels = result.lung_labels
    xs = np.arange(labels.shape[2])
    assert xs[(labels == 1).any(axis=(0, 1))].mean() < xs[(labels == 2).any(axis=(0, 1))].mean()
    from covidct.quant.analysis import block_mean

    grid = block_mean(volume, result.factor).array
    rows = np.flatnonzero((labels > 0).any(axis=(1, 2)))
    gaps = []
    for z in rows[len(rows) // 2 : len(rows) * 5 // 6]:  # heart level
        cols = np.flatnonzero((grid[z] > -500).any(axis=0))
        midline = (cols[0] + cols[-1]) / 2
        for right, left in zip(labels[z] == 1, labels[z] == 2, strict=True):
            if right.any() and left.any():
                gaps.append((midline - xs[right].max(), xs[left].min() - midline))
    to_right, to_left = np.median(np.array(gaps), axis=0)
    assert to_left > to_right


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("series", "bound"),
    [
        ("LIDC-IDRI-0002", REAL_NORMAL_MAX),
        ("LIDC-IDRI-0001", LIDC_NODULE_MAX),
        ("LIDC-IDRI-0003", LIDC_NODULE_MAX),
    ],
)
def test_real_lidc_series_read_low(shared_data, series, bound):
    from covidct.io import read_volume

    path = shared_data / "lidc-idri-small" / series
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    assert analyse_ct(read_volume(path)).report.involvement["total"] < bound
