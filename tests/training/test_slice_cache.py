"""The decoded slice cache: `covidct cache`, `SliceCache`, and training that reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from covidct.errors import CohortError, ConfigError, NoDataError
from covidct.io.cohort import read_covidx_split
from covidct.io.images import read_image
from covidct.io.slice_cache import PIXELS_FILE, SliceCache, write_slice_cache
from covidct.preprocessing import get_recipe
from covidct.training import TrainConfig
from covidct.training.data import build_data
from covidct.training.datasets import CachedSliceLoader, SliceDataset, VolumeLoader, slice_refs

REPO = Path(__file__).resolve().parents[2]
# (file name, class, height, width): not all square, as COVIDx slices are not all 512 x 512
SLICES = [
    ("NCP_1_10_0000.png", 2, 48, 40),
    ("NCP_1_10_0001.png", 2, 48, 40),
    ("CP_2_20_0003.png", 1, 40, 56),
    ("CP_3_30_0004.png", 1, 40, 40),
    ("Normal_4_40_0007.png", 0, 44, 36),
    ("Normal_5_50_0008.png", 0, 36, 44),
]


def write_covidx_tree(root: Path, split_name: str = "val_COVIDx_CT-2A.txt") -> Path:
    """PNG slices of different sizes with a body-like disc, and their COVIDx split file."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for name, cls, h, w in SLICES:
        yy, xx = np.mgrid[:h, :w]
        disc = ((yy - h / 2) ** 2 / (h / 2.5) ** 2 + (xx - w / 2) ** 2 / (w / 2.5) ** 2) < 1
        img = np.where(disc, 150, 10) + rng.integers(0, 40, (h, w))
        Image.fromarray(img.astype(np.uint8)).save(images / name)
        lines.append(f"{name} {cls} 2 3 {w - 2} {h - 1}")
    split = root / split_name
    split.write_text("\n".join(lines) + "\n")
    return split


def test_cache_holds_the_decoded_pngs_and_records(tmp_path: Path) -> None:
    split = write_covidx_tree(tmp_path)
    records = read_covidx_split(split, tmp_path / "images")
    cache = SliceCache(write_slice_cache(records, tmp_path / "cache", source=str(split)))
    assert len(cache) == len(SLICES)
    for i, record in enumerate(records):
        image = cache.image(cache.find(record.path.name))
        assert image.dtype == np.uint8 and image.shape == (SLICES[i][2], SLICES[i][3])
        assert np.array_equal(image, read_image(record.path))
    again = cache.records(tmp_path / "images")
    assert again == records
    assert cache.find("missing.png") is None


def test_cached_items_equal_png_items_with_augmentation(tmp_path: Path) -> None:
    split = write_covidx_tree(tmp_path)
    records = read_covidx_split(split, tmp_path / "images")
    cache = SliceCache(write_slice_cache(records, tmp_path / "cache"))
    recipe = get_recipe("covidnet-ct2", size=32)
    refs = slice_refs(records)
    classes = ("Normal", "Pneumonia", "COVID-19")
    from_png = SliceDataset(refs, recipe, classes, loader=VolumeLoader(), augment=True, seed=5)
    from_cache = SliceDataset(refs, recipe, classes, loader=CachedSliceLoader([cache]), augment=True, seed=5)
    for epoch in (0, 1):
        from_png.set_epoch(epoch)
        from_cache.set_epoch(epoch)
        for i in range(len(refs)):
            a, b = from_png[i], from_cache[i]
            assert a["target"] == b["target"]
            assert torch.equal(a["input"], b["input"])


def test_cache_command_then_training_reads_only_the_cache(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidct.cli.main import app, load_commands

    load_commands()
    split = write_covidx_tree(tmp_path)
    out = tmp_path / "cache"
    result = CliRunner().invoke(
        app, ["cache", str(split), "--images", str(tmp_path / "images"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for png in (tmp_path / "images").iterdir():  # training must not need the PNGs any more
        png.unlink()
    config = TrainConfig.from_yaml(
        REPO / "src" / "covidct" / "configs" / "demo-covidnet-ct2-s.yaml",
        **{
            "data.slice_cache": str(out),
            "recipe.overrides": {"size": 32},
            "data.fractions": (0.5, 0.25, 0.25),
        },
    )
    bundle = build_data(config)
    datasets = [d for d in (bundle.train, bundle.val, bundle.test) if d is not None and len(d)]
    assert sum(len(d) for d in datasets) == len(SLICES)  # the split file's 'val' split is kept
    item = datasets[0][0]
    assert item["input"].shape == (3, 32, 32)
    record = datasets[0].record(0)
    name = record.path.name
    cls = next(c for n, c, _, _ in SLICES if n == name)
    assert item["target"] == cls


def test_cache_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="covidct cache"):
        SliceCache(tmp_path)
    split = write_covidx_tree(tmp_path)
    records = read_covidx_split(split, tmp_path / "images")
    out = write_slice_cache(records, tmp_path / "cache")
    pixels = out / PIXELS_FILE
    pixels.write_bytes(pixels.read_bytes()[:-10])
    with pytest.raises(CohortError, match="truncated"):
        SliceCache(out)
    with pytest.raises(CohortError, match="share the image file name"):
        write_slice_cache([records[0], records[0]], tmp_path / "dup")
    config = TrainConfig.from_dict({"model": "covidnet-3d", "data": {"slice_cache": str(out)}})
    assert config.data.unit == "scan"
    with pytest.raises(ConfigError, match="data.unit 'slice'"):
        build_data(config)
