"""Discovery by DICOM identity: one job per study however the files lie, side files skipped."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from covidct.errors import NoDataError
from covidct.io.discovery import DiscoveryStats, discover, discover_list
from covidct.io.volume import Volume, VolumeMetadata

SHAPE = (6, 24, 24)
SPACING = (5.0, 2.0, 2.0)


def _write(folder: Path, study: str, series: str, *, slices: int = SHAPE[0], seed: int = 0) -> list[Path]:
    from covidct.io.dicom_write import write_dicom_series

    rng = np.random.default_rng(seed)
    array = rng.normal(-700, 50, (slices, *SHAPE[1:])).astype(np.float32)
    volume = Volume(array=array, spacing=SPACING, origin=(0.0, 0.0, 0.0), direction=np.eye(3), is_hu=True,
                    meta=VolumeMetadata(source="synthetic"))
    return write_dicom_series(volume, folder, study_uid=study, series_uid=series, seed=seed,
                              patient_id=f"P-{study[-3:]}")


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder).as_posix())
    return target


def test_mixed_layout_gives_one_job_per_study(tmp_path: Path) -> None:
    """Two studies' files in one folder, a study split over two folders, a zip, a zip in a zip, side
    files everywhere -> exactly one job per study, keyed by its series UID."""
    root = tmp_path / "archive"
    mixed = root / "mixed"
    _write(mixed, "1.2.3.100", "1.2.3.100.1", seed=1)
    _write(mixed, "1.2.3.200", "1.2.3.200.1", seed=2)
    split = _write(tmp_path / "split", "1.2.3.300", "1.2.3.300.1", seed=3)
    for i, p in enumerate(split):
        target = root / "split" / ("a" if i % 2 else "b") / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(p, target)
    _write(tmp_path / "z", "1.2.3.400", "1.2.3.400.1", seed=4)
    _zip(tmp_path / "z", root / "study400.zip")
    _write(tmp_path / "inner", "1.2.3.500", "1.2.3.500.1", seed=5)
    inner = _zip(tmp_path / "inner", tmp_path / "inner.zip")
    with zipfile.ZipFile(root / "outer.zip", "w") as zf:
        zf.write(inner, "nested/inner.zip")
        zf.writestr("nested/readme.txt", "side file")
    for side in ("mixed/slice_labels.csv", "notes.txt", "meta.json", "mixed/DICOMDIR", "split/a/x.bin"):
        (root / side).write_text("not an image")
    stats = DiscoveryStats()
    jobs = discover_list(root, staging_dir=tmp_path / "staged", stats=stats)
    assert sorted(j.key for j in jobs) == [f"1.2.3.{k}00.1" for k in (1, 2, 3, 4, 5)]
    by_key = {j.key: j for j in jobs}
    assert by_key["1.2.3.300.1"].source == root / "split" and by_key["1.2.3.300.1"].num_files == SHAPE[0]
    assert by_key["1.2.3.100.1"].source == mixed and by_key["1.2.3.100.1"].study_uid == "1.2.3.100"
    assert by_key["1.2.3.400.1"].source == root / "study400.zip"
    assert by_key["1.2.3.500.1"].source.parent == tmp_path / "staged", "a zip in a zip is kept for its job"
    assert stats.headers == 5 * SHAPE[0] and stats.side_files == 6 and stats.zips == 3
    assert stats.n_problems == 0


def test_jobs_read_back_as_the_discovered_series(tmp_path: Path) -> None:
    """Each job's (source, series) reads the right series, also from a folder holding two studies."""
    from covidct.io import read_volume

    _write(tmp_path / "mixed", "1.2.9.1", "1.2.9.1.1", slices=5, seed=1)
    _write(tmp_path / "mixed", "1.2.9.2", "1.2.9.2.1", slices=7, seed=2)
    for job in discover(tmp_path / "mixed"):
        volume = read_volume(job.source, series_uid=job.series_uid)
        assert volume.meta.series_uid == job.series_uid
        assert volume.array.shape[0] == job.num_files


def test_series_rules_pick_one_series_per_study(tmp_path: Path) -> None:
    """A study with a long and a short CT series gives one job: the series-choice rules (most slices)."""
    _write(tmp_path / "s" / "a", "1.2.7.1", "1.2.7.1.1", slices=3, seed=1)  # seen first
    _write(tmp_path / "s" / "b", "1.2.7.1", "1.2.7.1.2", slices=8, seed=2)
    (job,) = discover_list(tmp_path / "s")
    assert job.series_uid == "1.2.7.1.2" and job.num_files == 8
    assert any("1.2.7.1.1" in w for w in job.warnings), "the skipped series is named"


def test_progress_reports_and_walk_keeps_no_datasets(tmp_path: Path) -> None:
    seen: list[int] = []
    _write(tmp_path / "a", "1.2.6.1", "1.2.6.1.1", seed=1)
    jobs = discover_list(tmp_path, progress=lambda s: seen.append(s.headers))
    assert len(jobs) == 1 and seen[-1] == SHAPE[0]


def test_no_dicom_and_missing_path_are_clear(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="does not exist"):
        discover_list(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.csv").write_text("a,b\n")
    (tmp_path / "empty" / "scan.bin").write_bytes(b"\0" * 300)
    with pytest.raises(NoDataError, match=r"No DICOM series.*2 files looked at"):
        discover_list(tmp_path / "empty")


def test_damaged_file_is_reported_not_fatal(tmp_path: Path) -> None:
    files = _write(tmp_path / "a", "1.2.5.1", "1.2.5.1.1", seed=1)
    files[0].write_bytes(files[0].read_bytes()[:200])  # 'DICM' magic, header cut off
    stats = DiscoveryStats()
    (job,) = discover_list(tmp_path, stats=stats)
    assert job.num_files == SHAPE[0] - 1
    assert stats.n_problems == 1 and files[0].name in stats.problems[0]


@pytest.mark.realdata
def test_covid_ct_md_is_three_studies(shared_data: Path) -> None:
    """Each class folder holds a *_slice_labels.csv beside the series: 3 studies, not 6 folders."""
    stats = DiscoveryStats()
    jobs = discover_list(shared_data / "covid-ct-md", stats=stats)
    assert len(jobs) == 3 and all(j.series_uid for j in jobs)
    assert sorted(j.source.name for j in jobs) == ["P001", "cap001", "normal001"]
    assert sorted(j.num_files for j in jobs) == [148, 154, 168]
    assert stats.side_files == 3


def test_png_slice_folders_are_studies_only_without_dicom(tmp_path: Path) -> None:
    """A folder of 8-bit PNG slices is one study (read_volume reads it); a PNG preview beside a DICOM
    series is a side file, not a second study."""
    from PIL import Image

    slices = tmp_path / "pngs" / "case1"
    slices.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(slices / f"{i}.png")
    _write(tmp_path / "pngs" / "dicom", "1.2.4.1", "1.2.4.1.1", seed=1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pngs" / "dicom" / "preview.png")
    jobs = discover_list(tmp_path / "pngs")
    assert sorted(str(j.source) for j in jobs) == sorted([str(tmp_path / "pngs" / "dicom"), str(slices)])
    assert discover_list(slices / "0.png")[0].source == (slices / "0.png")
