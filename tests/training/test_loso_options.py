"""The checks of `covidct loso`'s options live in training/loso.py; the CLI only calls them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covidct.errors import ConfigError, NoDataError
from covidct.training.loso import LOSO_JSON, check_cnn_options, check_rescorable, loso_config


def test_cnn_runs_refuse_seed() -> None:
    check_cnn_options(seed=None)
    with pytest.raises(ConfigError, match="--seed is for --scorer runs"):
        check_cnn_options(seed=1)


def test_rescore_needs_a_finished_cnn_run(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="needs a finished LOSO folder"):
        check_rescorable(tmp_path)
    (tmp_path / LOSO_JSON).write_text(json.dumps({"scorer": "lesion-fraction"}))
    with pytest.raises(ConfigError, match="scored by --scorer"):
        check_rescorable(tmp_path)
    (tmp_path / LOSO_JSON).write_text(json.dumps({"folds": {}}))
    assert check_rescorable(tmp_path) == tmp_path


def test_loso_config_needs_a_slice_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --config CONFIG"):
        loso_config(None, tmp_path / "c.csv", {})
    with pytest.raises(ConfigError, match="loso trains slice models"):
        loso_config("covidnet-3d", tmp_path / "c.csv", {})
    cfg = loso_config("demo-covidnet-ct2-s", tmp_path / "c.csv", {"epochs": 2})
    assert cfg.epochs == 2 and cfg.data.path == str(tmp_path / "c.csv")


def test_cli_reports_a_scan_config(tmp_path: Path) -> None:
    from covidct.cli.app import app
    from covidct.cli.main import load_commands

    load_commands()
    result = CliRunner().invoke(app, ["loso", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"),
                                      "--config", "covidnet-3d"])
    assert result.exit_code == ConfigError.exit_code
    assert "loso trains slice models" in " ".join(result.output.split())
