"""Fixtures for packaging tests: the real CLI through typer's runner."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result


@pytest.fixture(scope="session")
def cli():
    """Run `covidct ARGS...` in-process; returns typer's Result (exit_code, output)."""
    from covidct.cli.app import app
    from covidct.cli.main import load_commands

    load_commands()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke
