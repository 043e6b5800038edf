"""Experiment: CovidCTNet's released classifier on the shared real series, with and without a denoiser.

Stages (run in order; outputs under runs/covidctnet-released/, not committed: they carry patient images):

``prep``      reads every shared series (COVID-CT-MD P001 / cap001 / normal001, LIDC-IDRI-0001..0003) and
              prepares it with the ``covidctnet-released`` recipe (the authors' preprocessing): the denoiser
              input (S_1mm, 1, 128, 128) per series -> ``slices.pt``.
``denoiser``  trains covidct's BCDU-Net (`covidctnet-denoiser`, base width 8, 128 px) with the one training
              engine on the control slices (normal001 + the three LIDC series; every STRIDE-th 1 mm slice),
              Perlin noise on half of them, 1 torch thread -> ``denoiser/best.ckpt``. The released BCDU-Net
              weights are not public, so this stands in for them.
``probs``     the released classifier checkpoint (``covidct import-weights``) on each series: (a) on the
              residual volume ``resize(CT - denoiser(CT), (50, 128, 128))`` as the authors' test notebook
              computes it, (b) on ``resize(CT, (50, 128, 128))`` without the denoiser -> ``probs.json``.

Run: ``nice -n 10 python benchmarks/covidctnet_released.py prep|denoiser EPOCHS|probs CLASSIFIER.ckpt``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from covidct.classes import CLASSES_3
from covidct.io import read_volume
from covidct.preprocessing import get_recipe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "runs" / "covidctnet-released"
SERIES = {
    "COVID-CT-MD P001": ("COVID-19", DATA / "covid-ct-md" / "COVID-19" / "P001"),
    "COVID-CT-MD cap001": ("Pneumonia", DATA / "covid-ct-md" / "CAP" / "cap001"),
    "COVID-CT-MD normal001": ("Normal", DATA / "covid-ct-md" / "Normal" / "normal001"),
    **{
        f"LIDC-IDRI-000{k}": ("Normal", DATA / "lidc-idri-small" / f"LIDC-IDRI-000{k}")
        for k in (1, 2, 3)
    },
}
"""Series name -> (covidct class, folder). LIDC-IDRI scans are lung-nodule screening CTs: no COVID-19/CAP."""
CONTROL = [name for name, (label, _) in SERIES.items() if label == "Normal"]
STRIDE = 3
"""Every STRIDE-th 1 mm slice of a control series is a denoiser training slice (neighbours: near copies)."""
VAL_STRIDE = 4
"""Every VAL_STRIDE-th training slice, with a fixed noise draw, is the (in-sample) monitoring set."""
DENOISER_OVERRIDES = {
    "optimizer.lr": 1e-2,
    "early_stopping.patience": 0,
    "recipe.overrides": {},
    "model.overrides": {"base_width": 8, "input_size": 128, "drop_rate": 0.0},
}


def prep() -> None:
    recipe = get_recipe("covidctnet-released")
    slices = {}
    for name, (_, folder) in SERIES.items():
        start = time.perf_counter()
        slices[name] = torch.from_numpy(recipe.prepare_slices(read_volume(folder)).array)
        print(f"{name}: {tuple(slices[name].shape)} in {time.perf_counter() - start:.1f} s", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save({"recipe": recipe.to_dict(), "slices": slices}, OUT / "slices.pt")


def denoiser(epochs: int) -> None:
    from covidct.training import TrainConfig, train
    from covidct.training.data import DataBundle
    from covidct.training.datasets import DenoiserDataset

    torch.set_num_threads(1)
    saved = torch.load(OUT / "slices.pt")
    control = torch.cat([saved["slices"][name][::STRIDE] for name in CONTROL])
    print(f"denoiser training slices: {tuple(control.shape)} from {CONTROL}", flush=True)
    config = TrainConfig.from_yaml(
        ROOT / "src" / "covidct" / "configs" / "covidctnet-denoiser.yaml",
        epochs=epochs,
        device="cpu",
        amp="off",
        channels_last="off",
        num_workers=0,
        progress=False,
        out_dir=str(OUT / "denoiser"),
        **DENOISER_OVERRIDES,
    )
    bundle = DataBundle(
        train=DenoiserDataset(control, seed=0),
        val=DenoiserDataset(control[::VAL_STRIDE], seed=1, fixed=True),  # in-sample: all control is training
        classes=CLASSES_3,
        recipe=get_recipe("covidctnet-released"),
        description={"data": f"control slices of {', '.join(CONTROL)} (every {STRIDE}rd 1 mm slice)"},
    )
    result = train(config, bundle)
    summary = {k: getattr(result, k) for k in ("epochs_run", "best_epoch", "best_metric")}
    print(json.dumps(summary), flush=True)


def probs(classifier_ckpt: str) -> None:
    from covidct.models import load_checkpoint
    from covidct.models.covidctnet import residual_map

    torch.set_num_threads(1)
    recipe = get_recipe("covidctnet-released")
    saved = torch.load(OUT / "slices.pt")
    classifier = load_checkpoint(classifier_ckpt).model.eval()
    denoiser_model = load_checkpoint(OUT / "denoiser" / "best.ckpt").model.eval()
    rows = {}
    with torch.no_grad():
        for name, (label, _) in SERIES.items():
            slices = saved["slices"][name]
            residual = residual_map(denoiser_model, slices, batch_size=16)
            plain = torch.from_numpy(recipe.to_classifier_input(slices.numpy()))[None]
            resid = torch.from_numpy(recipe.to_classifier_input(residual.numpy()))[None]
            p_plain = torch.softmax(classifier(plain), 1)[0].numpy()
            p_resid = torch.softmax(classifier(resid), 1)[0].numpy()
            rows[name] = {
                "label": label,
                "slices_1mm": int(slices.shape[0]),
                "mean_abs_residual": round(float(residual.abs().mean()), 5),
                "no_denoiser": dict(zip(classifier.class_names, np.round(p_plain, 4).tolist(), strict=True)),
                "residual": dict(zip(classifier.class_names, np.round(p_resid, 4).tolist(), strict=True)),
            }
            print(name, json.dumps(rows[name]), flush=True)
    (OUT / "probs.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    stage = sys.argv[1]
    if stage == "prep":
        prep()
    elif stage == "denoiser":
        denoiser(int(sys.argv[2]))
    elif stage == "probs":
        probs(sys.argv[2])
    else:
        raise SystemExit(__doc__)
