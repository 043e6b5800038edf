"""Model cards: `train` writes one into the run folder, naming the data, sources and split."""

from __future__ import annotations

import json
from pathlib import Path

from covidct.training import train
from covidct.training.model_card import MODEL_CARD_JSON, MODEL_CARD_MD

from .test_loso import _config, _write_cohort


def test_train_writes_a_model_card_naming_the_data(tmp_path: Path) -> None:
    cohort = _write_cohort(tmp_path / "data")
    config = _config(cohort, tmp_path / "run").replace(
        **{"data.task": "binary", "data.fractions": [0.5, 0.25, 0.25]}
    )
    result = train(config)
    card_md = (Path(result.out_dir) / MODEL_CARD_MD).read_text()
    card = json.loads((Path(result.out_dir) / MODEL_CARD_JSON).read_text())
    assert str(cohort) in card_md and card["data"] == str(cohort)
    assert set(card["records_per_split_source_label"]) == {"train", "val", "test"}
    per_split = card["records_per_split_source_label"]
    assert {key.split("/")[0] for split in per_split.values() for key in split} == {"A", "B", "C", "D"}
    assert card["epochs"]["run"] == 1 and card["model"] == "covidnet-ct2-s"
    assert 0.0 <= card["calibration"]["test"]["brier"] <= 2.0 and card["calibration"]["test"]["rows"] > 0
    assert "Not run for this checkpoint" in card_md  # no LOSO for a plain run, and the card says so
    assert "Known failure modes" in card_md and "torch" in card["machine"]
