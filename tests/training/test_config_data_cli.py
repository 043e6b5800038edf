"""Configs, patient splits, balancing, datasets and the `covidct train` CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from covidct.errors import ConfigError
from covidct.training import (
    DenoiserDataset,
    SliceDataset,
    TrainConfig,
    balance_by_repetition,
    collate_slice_sets,
    slice_refs,
    split_by_patient,
)
from covidct.training.config import parse_set_options

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "src" / "covidct" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    config = TrainConfig.from_yaml(path)
    again = TrainConfig.from_yaml(config.to_yaml(tmp_path / "c.yaml"))
    assert again == config


def test_unknown_key_names_key_and_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'optimizer.lrr'.*Did you mean 'lr'.*Valid keys here: name, lr"):
        TrainConfig.from_yaml(CONFIGS[0], **{"optimizer.lrr": 1})
    with pytest.raises(ConfigError, match="Valid values: sgd, adam"):
        TrainConfig.from_yaml(CONFIGS[0], **{"optimizer.name": "rmsprop"})


def test_set_options_are_parsed_as_yaml() -> None:
    overrides = parse_set_options(["optimizer.lr=1e-3", "augment=false", "model.overrides={input_size: 64}"])
    config = TrainConfig.from_yaml(REPO / "src" / "covidct" / "configs" / "covidnet-ct2-s.yaml", **overrides)
    assert (
        config.optimizer.lr == 1e-3
        and config.augment is False
        and config.model.overrides == {"input_size": 64}
    )
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["lr"])


def test_paper_facts_in_configs() -> None:
    s = TrainConfig.from_yaml(REPO / "src" / "covidct" / "configs" / "covidnet-ct2-s.yaml")
    assert (s.optimizer.name, s.optimizer.lr, s.optimizer.momentum, s.epochs, s.batch_size, s.balance) == (
        "sgd",
        5e-4,
        0.9,
        25,
        64,
        "repeat",
    )
    d3 = TrainConfig.from_yaml(REPO / "src" / "covidct" / "configs" / "covidnet-3d.yaml")
    assert (d3.optimizer.name, d3.optimizer.lr, d3.batch_size) == ("adam", 1e-3, 8)
    assert TrainConfig.from_yaml(REPO / "src" / "covidct" / "configs" / "ai-corona.yaml").epochs == 60
    stage2 = TrainConfig.from_yaml(REPO / "src" / "covidct" / "configs" / "covidctnet-classifier.yaml")
    assert stage2.denoiser_checkpoint and stage2.data.unit == "residual"


def test_split_is_by_patient_stratified_and_seeded(phantom_slices: Any) -> None:
    a = split_by_patient(phantom_slices.records, (0.6, 0.2, 0.2), seed=3)
    b = split_by_patient(phantom_slices.records, (0.6, 0.2, 0.2), seed=3)
    assert [r.split for r in a] == [r.split for r in b]
    per_patient = {}
    for r in a:
        per_patient.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in per_patient.values())
    patients = Counter((r.label, r.split) for r in {r.patient_id: r for r in a}.values())
    assert all(
        patients[(label, "train")] == 6 and patients[(label, "val")] == 2
        for label in ("Normal", "Pneumonia", "COVID-19")
    )
    c = split_by_patient(phantom_slices.records, (0.6, 0.2, 0.2), seed=4)
    assert [r.split for r in a] != [r.split for r in c]


def test_given_splits_are_kept(phantom_slices: Any) -> None:
    import dataclasses

    records = [
        dataclasses.replace(r, split="test" if r.patient_id.endswith("00") else "train")
        for r in phantom_slices.records
    ]
    out = split_by_patient(records, seed=9)
    assert [r.split for r in out] == [r.split for r in records]


def test_balance_by_repetition_equalises_counts() -> None:
    labels = [0] * 10 + [1] * 3 + [2] * 4
    idx = balance_by_repetition(labels, seed=0)
    counts = Counter(labels[i] for i in idx)
    assert counts == {0: 10, 1: 10, 2: 10}
    assert balance_by_repetition(labels, seed=0) == idx


def test_slice_dataset_augmentation_is_seeded_per_epoch_and_index(
    phantom_slices: Any, slice_recipe: Any
) -> None:
    refs = slice_refs(phantom_slices.records[:4])
    ds = SliceDataset(
        refs,
        slice_recipe,
        ("Normal", "Pneumonia", "COVID-19"),
        loader=phantom_slices.loader,
        augment=True,
        seed=1,
    )
    first = [ds[i]["input"] for i in range(4)]
    assert all(torch.equal(x, ds[i]["input"]) for i, x in enumerate(first))
    ds.set_epoch(1)
    assert any(not torch.equal(x, ds[i]["input"]) for i, x in enumerate(first))
    assert first[0].shape == (3, 64, 64) and first[0].dtype == torch.float32


def test_collate_slice_sets_pads_with_mask() -> None:
    items = [{"input": torch.ones(n, 3, 8, 8), "target": t, "index": t} for t, n in enumerate((2, 5))]
    batch = collate_slice_sets(items)
    assert batch["input"].shape == (2, 5, 3, 8, 8)
    assert batch["mask"].tolist() == [[True, True, False, False, False], [True] * 5]
    assert float(batch["input"][0, 2:].abs().sum()) == 0.0


def test_denoiser_dataset_noises_about_half_and_keeps_clean_target() -> None:
    slices = torch.rand(40, 1, 32, 32)
    ds = DenoiserDataset(slices, seed=0)
    noisy = [ds.noisy(i)[1] for i in range(len(ds))]
    assert 10 <= sum(noisy) <= 30
    item = ds[int(np.argmax(noisy))]
    assert torch.equal(item["target"], slices[int(np.argmax(noisy))])
    assert not torch.equal(item["input"], item["target"])
    assert float(item["input"].min()) >= 0.0 and float(item["input"].max()) <= 1.0


def test_cli_trains_on_a_synthetic_manifest(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidct.cli.main import app, load_commands
    from covidct.synthetic.cohort import make_cohort

    load_commands()
    manifest = make_cohort(
        tmp_path / "cohort", n_per_class=3, shape=(6, 32, 32), spacing=(6.0, 4.8, 4.8), fmt="nifti"
    )
    out = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(REPO / "src" / "covidct" / "configs" / "demo-covidnet-ct2-s.yaml"),
        "--data",
        str(manifest),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--set",
        "recipe.overrides={size: 32}",
        "--set",
        "model.overrides={input_size: 32}",
        "--set",
        "progress=false",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "best.ckpt").is_file() and (out / "predictions_test.csv").is_file()
    bad = CliRunner().invoke(app, [*args[:3], "--set", "optimizer.lrr=1"])
    assert bad.exit_code != 0 and "Unknown config key" in bad.output
