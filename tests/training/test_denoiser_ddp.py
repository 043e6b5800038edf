"""CovidCTNet stage 1 (denoiser) and 2-process DDP on CPU (gloo) vs one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from covidct.classes import CLASSES_3
from covidct.training import DataBundle, DenoiserDataset, TrainConfig, launch_ddp, train
from covidct.training.engine import LAST_CKPT

REPO = Path(__file__).resolve().parents[2]
DENOISER_CONFIG = REPO / "src" / "covidct" / "configs" / "covidctnet-denoiser.yaml"
RECIPE = {"name": "covidctnet", "size": 32}
TINY_DENOISER = {"base_width": 8, "input_size": 32, "drop_rate": 0.0}


def _half(slices: torch.Tensor) -> torch.Tensor:
    return nn.functional.avg_pool2d(slices, 2)


def denoiser_config(tmp_path: Path, name: str, **overrides: Any) -> TrainConfig:
    base = {
        "model.overrides": TINY_DENOISER,
        "batch_size": 4,
        "epochs": 2,
        "num_workers": 0,
        "device": "cpu",
        "progress": False,
        "early_stopping.patience": 0,
    }
    base.update(overrides)
    return TrainConfig.from_yaml(DENOISER_CONFIG, out_dir=str(tmp_path / name), **base)


NOISE_AMPLITUDE = 0.5
DDP_REL_TOLERANCE = 1e-4


def _denoiser_bundle(control_slices: Any, n_train: int | None = None) -> tuple[DataBundle, torch.Tensor]:
    train_slices, held_out = (_half(s) for s in control_slices)
    common = {"amplitude": NOISE_AMPLITUDE, "fraction": 1.0}
    train_ds = DenoiserDataset(train_slices[:n_train], seed=0, **common)
    val = DenoiserDataset(held_out, seed=1, fixed=True, **common)
    return DataBundle(train=train_ds, val=val, classes=(), recipe=RECIPE), held_out


def test_denoiser_training_lowers_held_out_error(tmp_path: Path, control_slices: Any) -> None:
    """Fast check (default run): two epochs lower the held-out reconstruction error."""
    bundle, _ = _denoiser_bundle(control_slices, n_train=16)
    bundle.val = DenoiserDataset(
        bundle.val.slices[:8], seed=1, fixed=True, amplitude=NOISE_AMPLITUDE, fraction=1.0
    )
    config = denoiser_config(tmp_path, "denoiser", epochs=2, batch_size=4, **{"optimizer.lr": 1e-2})
    result = train(config, bundle)
    assert result.history[-1]["val_mse"] < result.history[0]["val_mse"]
    assert result.best_checkpoint and Path(result.best_checkpoint).is_file()


@pytest.mark.slow
def test_denoiser_beats_noisy_input_on_held_out_control_slices(tmp_path: Path, control_slices: Any) -> None:
    """Stage 1 works: the reconstruction is closer to the clean held-out slices than the noisy input."""
    bundle, held_out = _denoiser_bundle(control_slices)
    config = denoiser_config(tmp_path, "denoiser", epochs=14, batch_size=4, **{"optimizer.lr": 1e-2})
    result = train(config, bundle)
    from covidct.models import load_checkpoint

    model = load_checkpoint(result.best_checkpoint).model
    noisy_only = DenoiserDataset(held_out, seed=2, fixed=True, fraction=1.0, amplitude=NOISE_AMPLITUDE)
    inputs = torch.stack([noisy_only[i]["input"] for i in range(len(noisy_only))])
    with torch.no_grad():
        recon = model(inputs)
    mse_input = float(nn.functional.mse_loss(inputs, held_out))
    mse_recon = float(nn.functional.mse_loss(recon, held_out))
    assert mse_recon < mse_input, (mse_recon, mse_input, result.history)


class TinyVolumes(torch.utils.data.Dataset):
    """Random (1, 16, 16, 16) volumes with labels 0..2 (in memory; picklable for spawn)."""

    def __init__(self, n: int = 8) -> None:
        gen = torch.Generator().manual_seed(0)
        self.volumes = torch.rand(n, 1, 16, 16, 16, generator=gen)
        self.labels = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"input": self.volumes[index], "target": self.labels[index], "index": index}


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    """Same global batches in 1 and 2 processes (gloo); a model without BatchNorm (CPU has no SyncBN)."""
    model = {
        "input_shape": [1, 16, 16, 16],
        "filters": [4, 4, 4, 4],
        "paddings": ["same"] * 4,
        "hidden_units": 8,
        "drop_rate": 0.0,
    }
    data = DataBundle(train=TinyVolumes(), val=None, classes=CLASSES_3, recipe=RECIPE)

    def config(name: str) -> TrainConfig:
        return TrainConfig.from_yaml(
            REPO / "src" / "covidct" / "configs" / "covidctnet-classifier.yaml",
            out_dir=str(tmp_path / name),
            epochs=2,
            batch_size=4,
            device="cpu",
            progress=False,
            num_workers=0,
            balance="none",
            **{"model.overrides": model, "recipe.overrides": {"size": 16, "depth": 16},
               "optimizer.name": "sgd", "optimizer.lr": 0.1},
        )

    single = train(config("single"), data)
    ddp = launch_ddp(config("ddp"), data, world_size=2)
    assert ddp.epochs_run == single.epochs_run == 2
    a = torch.load(Path(single.out_dir) / LAST_CKPT, weights_only=False)["model"]
    b = torch.load(Path(ddp.out_dir) / LAST_CKPT, weights_only=False)["model"]
    for key in a:  # same global batches; only float summation order differs
        diff = float((a[key] - b[key]).float().norm() / (a[key].float().norm() + 1e-12))
        assert diff < DDP_REL_TOLERANCE, (key, diff)
    assert [r["train_loss"] for r in single.history] == pytest.approx(
        [r["train_loss"] for r in ddp.history], rel=1e-4
    )


def _phantom_records(phantom_slices: Any, make_record: Any) -> tuple[list, Any]:
    records = []
    for i, (path, ph) in enumerate(sorted(phantom_slices.volumes.items())):
        split = ("train", "train", "val")[i % 3]
        records.append(
            make_record(
                case_id=path.rsplit("/", 1)[-1],
                path=path,
                label=ph.label,
                patient_id=path,
                split=split,
                source="phantom",
            )
        )

    def volume_loader(record: Any) -> Any:
        return phantom_slices.volumes[str(record.path)].volume

    return records, volume_loader


def test_covidctnet_two_stages_through_build_data(
    tmp_path: Path, phantom_slices: Any, record_factory: Any
) -> None:
    """Stage 1 (denoise) then stage 2 (residual volumes) from one set of records, real recipe."""
    from covidct.training.data import build_data

    records, loader = _phantom_records(phantom_slices, record_factory)
    recipe = {"recipe.overrides": {"size": 32, "depth": 8, "spacing": [6.25, 4.8, 4.8]}}
    stage1 = denoiser_config(tmp_path, "stage1", epochs=1, **recipe)
    r1 = train(stage1, build_data(stage1, records, volume_loader=loader))
    assert r1.best_checkpoint
    stage2 = TrainConfig.from_yaml(
        REPO / "src" / "covidct" / "configs" / "covidctnet-classifier.yaml",
        out_dir=str(tmp_path / "stage2"),
        epochs=1,
        batch_size=2,
        device="cpu",
        progress=False,
        num_workers=0,
        denoiser_checkpoint=r1.best_checkpoint,
        **recipe,
        **{
            "model.overrides": {"input_shape": [1, 8, 32, 32], "filters": [4, 8, 8], "paddings": ["same"] * 3}
        },
    )
    bundle = build_data(stage2, records, volume_loader=loader)
    assert bundle.train[0]["input"].shape == (1, 8, 32, 32)
    r2 = train(stage2, bundle)
    assert r2.epochs_run == 1 and Path(r2.predictions["val"]).is_file()
