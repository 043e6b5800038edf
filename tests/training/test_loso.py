"""Leave-one-source-out: folds never train on the held-out source; the command writes the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidct.classes import COVID, NON_COVID
from covidct.errors import ConfigError, DataLeakageError
from covidct.io import CaseRecord, read_manifest
from covidct.training import TrainConfig
from covidct.training.engine import RunResult, write_predictions
from covidct.training.loso import (
    fold_records,
    loso_table,
    parse_groups,
    run_loso,
    two_class_sources,
    validation_group,
)

SOURCES = {"A": (COVID, NON_COVID), "B": (COVID, NON_COVID), "C": (COVID,), "D": (NON_COVID,)}
IMAGES_PER_CLASS = 4
SIZE = 32


def _write_cohort(root: Path) -> Path:
    """Images of 4 sources (two two-class, one COVID-only, one Non-COVID-only), one slice per patient."""
    rng = np.random.default_rng(0)
    lines = ["path,label,patient_id,source"]
    for source, labels in SOURCES.items():
        for label in labels:
            for i in range(IMAGES_PER_CLASS):
                img = rng.integers(0, 60, (SIZE, SIZE)).astype(np.uint8)
                img[4:28, 4:28] += 120 if label == COVID else 60
                path = root / source / label / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
                lines.append(f"{path.relative_to(root)},{label},{source}:{label}:{i},{source}")
    manifest = root / "cohort.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_cohort(tmp_path_factory.mktemp("loso"))


def _config(cohort: Path, out: Path) -> TrainConfig:
    return TrainConfig.from_yaml(
        Path(__file__).resolve().parents[2] / "src" / "covidct" / "configs" / "demo-covidnet-ct2-s.yaml",
        **{
            "data.path": str(cohort),
            "recipe.overrides": {"size": SIZE},
            "model.overrides": {"input_size": SIZE, "drop_rate": 0.0},
            "epochs": 1,
            "progress": False,
            "out_dir": str(out),
        },
    )


def test_fold_records_hold_out_whole_sources(cohort: Path) -> None:
    records = read_manifest(cohort)
    recs = fold_records(records, ["C", "D"], val_fraction=0.25, seed=0)
    assert {r.source for r in recs if r.split == "test"} == {"C", "D"}
    assert {r.source for r in recs if r.split in ("train", "val")} == {"A", "B"}
    assert {r.split for r in recs} == {"train", "val", "test"}
    val_patients = {r.patient_id for r in recs if r.split == "val"}
    assert val_patients.isdisjoint({r.patient_id for r in recs if r.split == "train"})


def test_validation_is_drawn_per_source_and_small_sources_stay_in_training() -> None:
    big = [
        CaseRecord(f"u{i}", Path(f"u{i}.png"), (COVID, NON_COVID)[i % 2], f"U:{i}", source="U")
        for i in range(40)
    ]
    # 2 huge patients of one source (like COVID-CT-MD's CAP and Normal series): 100 slices each
    huge = [
        CaseRecord(f"m{p}-{k}", Path("series"), NON_COVID, f"M:{p}", source="M", slice_index=k)
        for p in range(2)
        for k in range(100)
    ]
    held = [CaseRecord("h", Path("h.png"), COVID, "H:0", source="H")]
    for seed in range(5):
        recs = fold_records(big + huge + held, ["H"], val_fraction=0.15, seed=seed)
        assert {r.split for r in recs if r.source == "M"} == {"train"}
        assert sum(r.split == "val" for r in recs if r.source == "U") == 6  # 15% of each label's 20


def test_validation_sources_are_never_trained_on(cohort: Path) -> None:
    records = read_manifest(cohort)
    recs = fold_records(records, ["A"], val_sources=["C", "D"])
    assert {r.source for r in recs if r.split == "test"} == {"A"}
    assert {r.source for r in recs if r.split == "val"} == {"C", "D"}
    assert {r.source for r in recs if r.split == "train"} == {"B"}
    with pytest.raises(ConfigError, match="both tested and validated"):
        fold_records(records, ["A"], val_sources=["A"])
    with pytest.raises(ConfigError, match="no source to train on"):
        fold_records(records, ["A", "B"], val_sources=["C", "D"])


def test_two_class_only_drops_the_single_class_training_sources(cohort: Path) -> None:
    records = read_manifest(cohort)
    recs = fold_records(records, ["A"], two_class_only=True)
    assert {r.source for r in recs if r.split in ("train", "val")} == {"B"}
    assert {r.source for r in recs if r.split == "test"} == {"A"}
    assert two_class_sources(records) == {"A", "B"}
    with pytest.raises(ConfigError, match="no source to train on"):
        fold_records(records, ["A", "B"], two_class_only=True)
    tiny = [r for r in records if r.source != "B" or r.patient_id.endswith(":0")]  # B: 1 patient per label
    with pytest.raises(ConfigError, match="no validation patient"):
        fold_records(tiny, ["A"], two_class_only=True)


def test_next_group_validation_cycles_through_the_groups() -> None:
    groups = parse_groups("A;B;C+D")
    assert [validation_group(groups, i) for i in range(3)] == [("B",), ("C", "D"), ("A",)]
    with pytest.raises(ConfigError, match="at least 3 groups"):
        validation_group(parse_groups("A;B"), 0)


def test_fold_records_refuse_unknown_source_and_shared_patients(cohort: Path) -> None:
    records = read_manifest(cohort)
    with pytest.raises(ConfigError, match="not in the cohort"):
        fold_records(records, ["Z"])
    clash = [*records, CaseRecord("x", records[0].path, COVID, records[0].patient_id, source="C")]
    with pytest.raises(DataLeakageError):
        fold_records(clash, ["C"])


def test_run_loso_never_trains_on_the_held_out_source(cohort: Path, tmp_path: Path) -> None:
    """A fake engine records what each fold trains and validates on, and writes random predictions."""
    seen: dict[str, set[str]] = {}

    def fake_train(config: TrainConfig, data) -> RunResult:
        out = Path(config.out_dir)
        out.mkdir(parents=True)
        fold = out.name
        seen[fold] = {data.train.record(i).source for i in range(len(data.train))}
        seen[fold] |= {data.val.record(i).source for i in range(len(data.val))}
        preds = {}
        for split, ds in (("val", data.val), ("test", data.test)):
            p = np.random.default_rng(len(ds)).random(len(ds))
            path = write_predictions(
                out / f"predictions_{split}.csv",
                ds,
                list(range(len(ds))),
                np.stack([1 - p, p], 1),
                data.classes,
            )
            preds[split] = str(path)
        return RunResult(str(out), 1, 0, 0.5, "val_accuracy", False, [], None, None, preds)

    groups = parse_groups("A;B;C+D")
    result = run_loso(
        _config(cohort, tmp_path),
        read_manifest(cohort),
        tmp_path,
        groups=groups,
        val_fraction=0.25,
        train_fn=fake_train,
    )
    assert seen == {"A": {"B", "C", "D"}, "B": {"A", "C", "D"}, "C+D": {"A", "B"}}
    assert result.folds["C+D"]["trained_on"] == ["A", "B"]
    per_source = result.folds["C+D"]["per_source"]
    assert "sensitivity" in per_source["C"] and "specificity" not in per_source["C"]
    assert "specificity" in per_source["D"] and "sensitivity" not in per_source["D"]
    assert per_source["C"]["auc_patient"] is None  # one class: no AUC, said so
    assert result.folds["A"]["auc_slice"]["low"] <= result.folds["A"]["auc_slice"]["estimate"]
    table = (tmp_path / "loso.md").read_text()
    assert "n/a (one class)" in table and "| C+D | C |" in table

    seen.clear()
    nested = run_loso(
        _config(cohort, tmp_path / "nested"),
        read_manifest(cohort),
        tmp_path / "nested",
        groups=groups,
        val_mode="next-group",
        train_fn=fake_train,
    )
    assert seen == {"A": {"B", "C", "D"}, "B": {"A", "C", "D"}, "C+D": {"A", "B"}}
    assert nested.folds["A"]["trained_on"] == ["C", "D"] and nested.folds["A"]["validated_on"] == ["B"]
    assert nested.folds["C+D"]["trained_on"] == ["B"] and nested.folds["C+D"]["validated_on"] == ["A"]


def test_loso_command_runs_the_engine_end_to_end(cohort: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidct.cli.main import app, load_commands

    load_commands()
    config = tmp_path / "c.yaml"
    _config(cohort, tmp_path / "unused").to_yaml(config)
    res = CliRunner().invoke(
        app,
        [
            "loso",
            str(cohort),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "l"),
            "--groups",
            "A;C+D",
            "--val-fraction",
            "0.25",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "l" / "A" / "best.ckpt").is_file()
    assert "| A | A |" in (tmp_path / "l" / "loso.md").read_text()
    card = (tmp_path / "l" / "A" / "model_card.md").read_text()
    assert str(cohort) in card and "| A | A |" in card and "| C+D | C |" in card
    before = json.loads((tmp_path / "l" / "loso.json").read_text())["folds"]
    _assert_checkpoints_carry_their_fold(tmp_path / "l", before)
    again = CliRunner().invoke(
        app, ["loso", str(cohort), "--config", str(config), "--out", str(tmp_path / "l"), "--rescore"]
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "l" / "loso.json").read_text())["folds"] == before
    _assert_checkpoints_carry_their_fold(tmp_path / "l", before)
    bad = CliRunner().invoke(
        app, ["loso", str(cohort), "--config", str(config), "--out", str(tmp_path / "m"), "--groups", "Q"]
    )
    assert bad.exit_code != 0 and "not in the cohort" in bad.output
    assert "Traceback" not in bad.output


def _assert_checkpoints_carry_their_fold(out: Path, folds: dict) -> None:
    """Each fold's best checkpoint holds that fold's own held-out figures (not another fold's)."""
    import torch

    from covidct.evaluation.validity import VALIDITY_KEY

    for name, fold in folds.items():
        validity = torch.load(out / name / "best.ckpt", weights_only=True)["extra"][VALIDITY_KEY]
        assert validity["held_out"] == fold["held_out"]
        assert not set(validity["trained_on"]) & set(fold["held_out"])
        assert validity["slices"] == fold["slices"]
        if fold["auc_slice"] is not None:
            assert validity["auc_slice"]["estimate"] == fold["auc_slice"]["estimate"]
        held_out = "+".join(fold["held_out"])
        assert validity["statement"].startswith(f"Tested on a source it never saw: {held_out}")


def test_table_marks_single_class_groups() -> None:
    fold = {
        "auc_slice": None,
        "auc_patient": None,
        "aggregation": "mean",
        "threshold": 0.5,
        "per_source": {
            "C": {
                "patients": 2,
                "covid_patients": 2,
                "slices": 4,
                "auc_patient": None,
                "mean_covid_probability": 0.7,
                "sensitivity": {"estimate": 0.5, "low": 0.09, "high": 0.91, "n": 2},
            }
        },
    }
    assert "sens 0.500 (0.09-0.91) n=2" in loso_table({"C": fold})
