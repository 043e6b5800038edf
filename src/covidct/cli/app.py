"""The typer application every sub-command module registers itself on."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from covidct.errors import CovidCTError

app = typer.Typer(
    name="covidct",
    help="COVID-19 detection in chest CT (research use only, not for diagnosis).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a sub-command; a `CovidCTError` prints its message and exits non-zero, no traceback."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return func(*args, **kw)
            except CovidCTError as exc:
                console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
                raise typer.Exit(code=exc.exit_code) from None

        app.command(name=name, **kwargs)(wrapper)
        return func

    return decorator
