"""The training engine on synthetic phantom slices: accuracy, exact resume, NaN, run folder."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from covidct.classes import CLASSES_3
from covidct.errors import DataLeakageError, TrainingError
from covidct.training import DataBundle, SliceDataset, TrainConfig, slice_refs, split_by_patient, train
from covidct.training.engine import LAST_CKPT, Objective
from covidct.training.splits import records_in

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "src" / "covidct" / "configs" / "demo-covidnet-ct2-s.yaml"
TINY_MODEL = {
    "stem_width": 8,
    "widths": [16, 16, 24, 24],
    "depths": [1, 1, 1, 1],
    "drop_rate": 0.1,
    "input_size": 32,
}


def slice_bundle(phantoms: Any, recipe: Any, config: TrainConfig) -> DataBundle:
    records = split_by_patient(phantoms.records, config.data.fractions, seed=config.data.split_seed)

    def make(split: str, augment: bool) -> SliceDataset:
        return SliceDataset(
            slice_refs(records_in(records, split)),
            recipe,
            CLASSES_3,
            loader=phantoms.loader,
            augment=augment,
            seed=config.seed,
        )

    return DataBundle(
        train=make("train", config.augment),
        val=make("val", False),
        test=make("test", False),
        classes=CLASSES_3,
        recipe=recipe,
        description={"data": "phantoms"},
    )


def demo_config(tmp_path: Path, **overrides: Any) -> TrainConfig:
    return TrainConfig.from_yaml(DEMO_CONFIG, out_dir=str(tmp_path / "run"), progress=False, **overrides)


def test_covidnet_ct2_s_learns_phantom_classes(
    tmp_path: Path, phantom_slices: Any, slice_recipe: Any
) -> None:
    config = demo_config(tmp_path)
    result = train(config, slice_bundle(phantom_slices, slice_recipe, config))
    assert result.best_metric is not None and result.best_metric >= 0.9, result.history
    out = Path(result.out_dir)
    for name in (
        "config.yaml",
        "env.json",
        "metrics.csv",
        "best.ckpt",
        LAST_CKPT,
        "predictions_val.csv",
        "predictions_test.csv",
        "result.json",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir()), "no TensorBoard events"
    with (out / "predictions_val.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "case_id",
        "patient_id",
        "label",
        "prob_Normal",
        "prob_Pneumonia",
        "prob_COVID-19",
        "slice_index",
        "source",
    ]
    assert abs(sum(float(rows[0][f"prob_{c}"]) for c in CLASSES_3) - 1) < 1e-4
    from covidct.models import load_checkpoint

    ckpt = load_checkpoint(out / "best.ckpt")
    assert ckpt.class_names == CLASSES_3 and ckpt.recipe and ckpt.provenance["training_data"] == "phantoms"

    # val_auc of the last epoch is the macro one-vs-rest AUC of the written validation predictions
    # (last.ckpt's epoch: the predictions come from best.ckpt, equal when the last epoch is the best)
    from covidct.evaluation.metrics import roc_auc_ovr

    labels = np.array([CLASSES_3.index(r["label"]) for r in rows])
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASSES_3] for r in rows])
    best_row = result.history[result.best_epoch - 1]
    assert best_row["val_auc"] == pytest.approx(roc_auc_ovr(labels, probs, average="macro"), abs=1e-6)


def test_ranking_metric_is_the_covid_auc_and_absent_for_one_class() -> None:
    objective = Objective()
    target = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    assert objective.ranking("val", probs, target) == {"val_auc": 1.0}
    assert objective.ranking("val", probs[:, ::-1], target) == {"val_auc": 0.0}
    assert objective.ranking("val", probs, np.zeros(4, int)) == {}


def tiny_config(tmp_path: Path, name: str, **overrides: Any) -> TrainConfig:
    base = {
        "model.overrides": TINY_MODEL,
        "recipe.overrides": {"size": 32},
        "epochs": 2,
        "batch_size": 8,
        "optimizer.lr": 0.02,
        "augment": True,
    }
    base.update(overrides)
    return TrainConfig.from_yaml(DEMO_CONFIG, out_dir=str(tmp_path / name), progress=False, **base)


def test_resume_gives_identical_weights(tmp_path: Path, phantom_slices: Any, tiny_recipe: Any) -> None:
    full_cfg = tiny_config(tmp_path, "full")
    full = train(full_cfg, slice_bundle(phantom_slices, tiny_recipe, full_cfg))
    part_cfg = tiny_config(tmp_path, "part", max_epochs=1)
    first = train(part_cfg, slice_bundle(phantom_slices, tiny_recipe, part_cfg))
    assert first.epochs_run == 1
    resumed_cfg = part_cfg.replace(max_epochs=None)
    resumed = train(resumed_cfg, slice_bundle(phantom_slices, tiny_recipe, resumed_cfg), resume=True)
    assert resumed.epochs_run == 2
    a = torch.load(Path(full.out_dir) / LAST_CKPT, weights_only=False)
    b = torch.load(Path(resumed.out_dir) / LAST_CKPT, weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


class NaNAfterFirstEpoch(torch.utils.data.Dataset):
    """Wraps a dataset; from epoch 1 on its inputs are NaN."""

    def __init__(self, inner: SliceDataset) -> None:
        self.inner, self.labels, self.epoch = inner, inner.labels, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict:
        item = self.inner[index]
        if self.epoch >= 1:
            item["input"] = torch.full_like(item["input"], float("nan"))
        return item


def test_nan_loss_raises_and_keeps_last_checkpoint(
    tmp_path: Path, phantom_slices: Any, tiny_recipe: Any
) -> None:
    config = tiny_config(tmp_path, "nan", epochs=3)
    bundle = slice_bundle(phantom_slices, tiny_recipe, config)
    bundle.train = NaNAfterFirstEpoch(bundle.train)
    with pytest.raises(TrainingError, match="nan.*epoch 2.*last good checkpoint"):
        train(config, bundle)
    state = torch.load(Path(config.out_dir) / LAST_CKPT, weights_only=False)
    assert state["epoch"] == 1


def test_leaking_manifest_is_refused(phantom_slices: Any) -> None:
    import dataclasses

    records = [dataclasses.replace(r, split="train") for r in phantom_slices.records]
    leaked_pid = records[0].patient_id
    records[0] = dataclasses.replace(records[0], split="test")
    with pytest.raises(DataLeakageError, match=leaked_pid):
        split_by_patient(records)


def test_resume_without_checkpoint_is_a_clear_error(
    tmp_path: Path, phantom_slices: Any, tiny_recipe: Any
) -> None:
    from covidct.errors import CheckpointError

    config = tiny_config(tmp_path, "none")
    with pytest.raises(CheckpointError, match="does not exist"):
        train(config, slice_bundle(phantom_slices, tiny_recipe, config), resume=True)
