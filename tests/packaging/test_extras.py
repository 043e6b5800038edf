"""A command whose extra is missing exits with the config-error code and names the pip command.

Absence is simulated by putting None in sys.modules (import then raises ImportError); the output checked
is the real CLI's, through typer's runner.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from covidct.errors import ConfigError, MissingExtraError
from covidct.extras import EXTRAS, install_hint, require_extra


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    require_extra("serve", "json")  # present: no error
    _hide(monkeypatch, "sqlalchemy")
    with pytest.raises(MissingExtraError, match=r'sqlalchemy.*pip install "covidct\[serve\]"'):
        require_extra("serve", "sqlalchemy")
    with pytest.raises(ValueError, match="unknown extra"):
        require_extra("no-such-extra", "json")


def test_every_documented_extra_is_in_pyproject() -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    for name in EXTRAS:
        assert name in extras["all"][0], f"covidct[all] lacks {name}"


CASES = [
    # (args, hidden modules, extra); files named in args are created empty
    (["triage", "{tmp}/studies"], ["sqlalchemy"], "serve"),
    (["serve", "--port", "1"], ["fastapi"], "serve"),
    (["serve", "--port", "1"], ["sqlalchemy"], "serve"),
    (["dicom-listen", "--port", "1"], ["pynetdicom"], "dicom-net"),
    (["dicom-listen", "--port", "1"], ["highdicom"], "dicom-net"),
    (["dicom-listen", "--port", "1"], ["sqlalchemy"], "serve"),
    (["token", "create", "me", "--db", "{tmp}/t.db"], ["sqlalchemy"], "serve"),
    (["predict", "{tmp}/studies"], ["jinja2"], "report"),
    (["import-weights", "covidctnet-classifier", "{tmp}/w.h5", "--out", "{tmp}/c.ckpt"], ["h5py"], "import"),
]


@pytest.mark.parametrize(("args", "hidden", "extra"), CASES,
                         ids=[f"{c[0][0]}-{c[1][0]}" for c in CASES])
def test_cli_names_the_missing_extra(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     args: list[str], hidden: list[str], extra: str) -> None:
    (tmp_path / "studies").mkdir()
    (tmp_path / "w.h5").write_bytes(b"")
    _hide(monkeypatch, *hidden)
    result = cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == ConfigError.exit_code, result.output
    assert install_hint(extra) in result.output
    assert hidden[0] in result.output
    assert "covidct bug" not in result.output and "Traceback" not in result.output


def test_export_names_the_missing_extra(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import random_ct2s_checkpoint

    random_ct2s_checkpoint(tmp_path, 64)
    _hide(monkeypatch, "onnxruntime")
    result = cli("export", "covidnet-ct2-s", "--checkpoint", str(tmp_path / "s.ckpt"), "--out",
                 str(tmp_path / "m.onnx"), "--size", "64")
    assert result.exit_code == ConfigError.exit_code, result.output
    assert install_hint("export") in result.output
