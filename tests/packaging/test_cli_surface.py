"""--version, switches in --help, shipped configs found by name from any directory."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

import covidct
from covidct.configs import config_path, list_configs
from covidct.errors import ConfigError, UnknownNameError

PAPER_CONFIGS = ("ai-corona", "covidctnet-classifier", "covidctnet-denoiser", "covidnet-3d", "covidnet-ct2-l",
                 "covidnet-ct2-s", "demo-covidnet-ct2-s")
HELP_COMMANDS = ("predict", "triage", "serve", "explain", "train", "loso", "dicom-listen", "evaluate")


def test_version_comes_from_package_metadata() -> None:
    assert covidct.__version__ == version("covidct")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag(cli, flag: str) -> None:
    result = cli(flag)
    assert result.exit_code == 0
    assert result.output.strip() == f"covidct {version('covidct')}"


@pytest.mark.parametrize("name", HELP_COMMANDS)
def test_help_shows_switches_without_a_type(cli, name: str) -> None:
    result = cli(name, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "list[" not in result.output
    help_line = next(line for line in result.output.splitlines() if "--help" in line)
    assert re.search(r"--help\s+Show this message", help_line), help_line


def test_shipped_configs_are_listed(cli) -> None:
    assert set(PAPER_CONFIGS) <= set(list_configs())
    result = cli("configs", "--json")
    assert result.exit_code == 0, result.output
    assert set(PAPER_CONFIGS) <= {row["name"] for row in __import__("json").loads(result.output)}


def test_config_found_by_name_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from covidct.training import TrainConfig

    monkeypatch.chdir(tmp_path)
    for name in ("covidnet-ct2-s", "covidnet-ct2-s.yaml"):
        path = config_path(name)
        assert path.is_file() and path.parent.name == "configs" and path.parent.parent.name == "covidct"
    assert TrainConfig.from_yaml("covidnet-ct2-s").model.name == "covidnet-ct2-s"


def test_config_by_path_wins(tmp_path: Path) -> None:
    own = tmp_path / "covidnet-ct2-s.yaml"
    own.write_text(config_path("covidnet-ct2-s").read_text().replace("epochs: 25", "epochs: 3"))
    from covidct.training import TrainConfig

    assert TrainConfig.from_yaml(own).epochs == 3


def test_misnamed_config_says_did_you_mean(cli) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'covidnet-ct2-s'"):
        config_path("covidnet-ct2s")
    result = cli("train", "--config", "covidnet-ct2s", "--data", "x.csv")
    assert result.exit_code == ConfigError.exit_code
    assert "Did you mean 'covidnet-ct2-s'" in result.output
    assert "Traceback" not in result.output and "covidct bug" not in result.output


def test_missing_config_path_is_a_config_error(tmp_path: Path, cli) -> None:
    missing = tmp_path / "nope" / "mine.yaml"
    with pytest.raises(ConfigError, match="does not exist"):
        config_path(missing)
    result = cli("train", "--config", str(missing))
    assert result.exit_code == ConfigError.exit_code
    assert "does not exist" in result.output
