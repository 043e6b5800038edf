"""`covidct evaluate --checkpoint --data`: the glue that runs a model over a manifest (io/models faked).

The real readers (`covidct.io.read_cohort`, `read_volume`) and the model are other areas' work; this test
replaces them with fakes so it checks only what evaluation does with their outputs.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from covidct.classes import CLASSES_3


@dataclass
class FakeRecord:
    case_id: str
    path: str
    label: str
    patient_id: str
    split: str
    source: str = "fake"


@dataclass
class FakePrediction:
    probs: np.ndarray
    class_names: tuple[str, ...]


def test_checkpoint_and_manifest_run_the_model_first(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    labels = [CLASSES_3[i % 3] for i in range(24)]
    records = [
        FakeRecord(f"c{i}", f"/vol/{i}", lab, f"p{i}", "val" if i < 9 else "test")
        for i, lab in enumerate(labels)
    ]
    truth = {r.path: CLASSES_3.index(r.label) for r in records}

    def fake_predict(ckpt, volume, *, batch_size=16):
        logits = rng.normal(size=3)
        logits[truth[volume]] += 2.0
        return FakePrediction(np.exp(logits) / np.exp(logits).sum(), CLASSES_3)

    fakes = {
        "covidct.io": {"read_cohort": lambda path: records, "read_volume": lambda path: path},
        "covidct.models": {"load_checkpoint": lambda path: "ckpt"},
        "covidct.models.inference": {"predict_volume": fake_predict},
    }
    for name, attrs in fakes.items():  # restored after the test; the real modules are not imported
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    from covidct.cli.app import app
    from covidct.cli.main import load_commands

    load_commands()
    out = tmp_path / "rep"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "m.pt"),
            "--data",
            str(tmp_path / "manifest.csv"),
            "--tune-split",
            "val",
            "--operating-point",
            "youden",
            "--n-boot",
            "100",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "predictions.csv").read_text().startswith("case_id,patient_id,label,prob_Normal")
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_patients"] == 15 and m["operating_point"]["chosen_on"]["n_tuning"] == 9
