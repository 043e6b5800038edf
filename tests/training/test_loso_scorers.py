"""LOSO with a lesion scorer: the weight-free one never reads a training slice, the fitted one is fitted
on the fold's training slices only; held-out groups get the engine's prediction files and the table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from tests.quant.test_slice_lesions import lung_grey, phantom_hu

from covidct.classes import COVID, NON_COVID
from covidct.errors import UnknownNameError
from covidct.io import read_manifest
from covidct.training.datasets import VolumeLoader
from covidct.training.loso_scorers import run_scorer_loso

SOURCES = {"A": (COVID, NON_COVID), "B": (COVID, NON_COVID), "C": (COVID,), "D": (NON_COVID,)}
IMAGES_PER_CLASS = 3
ENGINE_HEADER = ["case_id", "patient_id", "label", f"prob_{NON_COVID}", f"prob_{COVID}", "source"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom slices: COVID-19 with a ground-glass patch (-550 HU), Non-COVID healthy; one per patient."""
    root = tmp_path_factory.mktemp("scorer_cohort")
    lines = ["path,label,patient_id,source"]
    for s, (source, labels) in enumerate(SOURCES.items()):
        for label in labels:
            for i in range(IMAGES_PER_CLASS):
                hu = phantom_hu(lesion_hu=-550.0 if label == COVID else None, seed=10 * s + i)
                path = root / source / label / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(lung_grey(hu)).save(path)
                lines.append(f"{path.relative_to(root)},{label},{source}:{label}:{i},{source}")
    (root / "cohort.csv").write_text("\n".join(lines) + "\n")
    return root / "cohort.csv"


class RecordingLoader(VolumeLoader):
    """Reads files and remembers which records were read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def image(self, ref):  # type: ignore[no-untyped-def]
        self.read.append(str(ref.record.case_id))
        return super().image(ref)


def test_scorer_loso_reads_only_validation_and_held_out_slices(cohort: Path, tmp_path: Path) -> None:
    records = read_manifest(cohort)
    loader = RecordingLoader()
    result = run_scorer_loso(
        records, tmp_path / "l", groups=(("A",), ("C", "D")), val_fraction=0.34, loader=loader
    )
    folds = result.folds
    assert list(folds) == ["A", "C+D"]
    for name, held_out in (("A", {"A"}), ("C+D", {"C", "D"})):
        fold_dir = tmp_path / "l" / name
        assert not list(fold_dir.glob("*.ckpt"))
        with (fold_dir / "predictions_test.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ENGINE_HEADER
        assert {r["source"] for r in rows} == held_out
        assert folds[name]["auc_slice"]["estimate"] == 1.0  # lesion phantoms score above healthy ones
        assert folds[name]["unscored"] == {"val": {}, "test": {}}
    assert {r["source"] for r in csv.DictReader((tmp_path / "l" / "A" / "predictions_val.csv").open())} <= {
        "B",
        "C",
        "D",
    }
    read = set(loader.read)
    assert read and len(loader.read) == len(read)  # each slice scored once across folds
    val_or_test = {
        r["case_id"]
        for name in folds
        for split in ("val", "test")
        for r in csv.DictReader((tmp_path / "l" / name / f"predictions_{split}.csv").open())
    }
    assert read == val_or_test
    saved = json.loads((tmp_path / "l" / "loso.json").read_text())
    assert saved["scorer"]["trained"] is False and set(saved["folds"]) == {"A", "C+D"}
    table = (tmp_path / "l" / "loso.md").read_text()
    assert "| A | A |" in table and "| C+D | C |" in table and "1.000" in table


def test_unknown_scorer_names_the_valid_ones(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="lesion-fraction"):
        run_scorer_loso(read_manifest(cohort), tmp_path / "x", scorer="lesion-fractoin")


def test_loso_command_with_a_scorer_needs_no_config(cohort: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidct.cli.main import app, load_commands

    load_commands()
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        [
            "loso",
            str(cohort),
            "--scorer",
            "lesion-fraction",
            "--out",
            str(out),
            "--groups",
            "B;C+D",
            "--val-fraction",
            "0.34",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "| B | B |" in (out / "loso.md").read_text() and "no CNN trained" in res.output
    for args in (["--rescore"], ["--epochs", "2"]):
        bad = CliRunner().invoke(
            app, ["loso", str(cohort), "--scorer", "lesion-fraction", "--out", str(out), *args]
        )
        assert bad.exit_code != 0 and "trains no CNN" in bad.output and "Traceback" not in bad.output
    rescore = CliRunner().invoke(app, ["loso", str(cohort), "--out", str(out), "--rescore"])
    assert rescore.exit_code != 0 and "--scorer" in rescore.output and "Traceback" not in rescore.output
    seeded = CliRunner().invoke(
        app, ["loso", str(cohort), "--scorer", "lesion-fraction", "--out", str(tmp_path / "s"),
              "--groups", "B;C+D", "--val-fraction", "0.34", "--seed", "3"],
    )
    assert seeded.exit_code == 0, seeded.output
    assert json.loads((tmp_path / "s" / "loso.json").read_text())["scorer"]["seed"] == 3
    cnn_seed = CliRunner().invoke(app, ["loso", str(cohort), "--out", str(tmp_path / "c"), "--seed", "3"])
    assert cnn_seed.exit_code != 0 and "--set seed" in cnn_seed.output and "Traceback" not in cnn_seed.output
    neither = CliRunner().invoke(app, ["loso", str(cohort), "--out", str(tmp_path / "n")])
    assert neither.exit_code != 0 and "--config" in neither.output and "Traceback" not in neither.output


def test_fitted_scorer_never_sees_the_held_out_group(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lesion-logistic``: fitted per fold on training slices whose groups exclude the held-out one
    (a planted bug that fits on every slice would put the held-out group into ``fitted_groups``)."""
    import covidct.training.lesion_model as lesion_model
    from covidct.training.lesion_model import LesionModel

    fitted_groups: list[set[str]] = []
    real_select = lesion_model.select_by_groups

    def recording_select(x, y, groups, names):  # type: ignore[no-untyped-def]
        fitted_groups.append(set(groups))
        return real_select(x, y, groups, names)

    monkeypatch.setattr(lesion_model, "select_by_groups", recording_select)
    groups = (("A",), ("B",), ("C", "D"))
    result = run_scorer_loso(
        read_manifest(cohort), tmp_path / "f", scorer="lesion-logistic", groups=groups, val_fraction=0.34
    )
    assert fitted_groups == [{"B", "C+D"}, {"A", "C+D"}, {"A", "B"}]
    for name, fold in result.folds.items():
        assert fold["auc_slice"]["estimate"] == 1.0
        assert not set(fold["held_out"]) & set(fold["trained_on"])
        model = LesionModel.from_json(tmp_path / "f" / name / "lesion_model.json")
        assert model.feature_names[0] == "ggo_fraction" and fold["model"]["c"] == model.c
        card = json.loads((tmp_path / "f" / name / "model_card.json").read_text())
        trained = {key.split("/")[0] for key in card["records_per_split_source_label"]["train"]}
        assert card["model"] == "lesion-logistic" and not trained & set(fold["held_out"])
        assert "CAP" in " ".join(card["known_failure_modes"])
        assert "| C+D | C |" in (tmp_path / "f" / name / "model_card.md").read_text()
    saved = json.loads((tmp_path / "f" / "loso.json").read_text())
    assert saved["scorer"]["trained"] is True and len(saved["scorer"]["features"]) == 13
