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


def guarded(func: F) -> F:
    """Wrap a command: a `CovidCTError` prints its message and exits non-zero, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return func(*args, **kw)
        except CovidCTError as exc:
            console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a sub-command on `app`, wrapped by `guarded`."""

    def decorator(func: F) -> F:
        app.command(name=name, **kwargs)(guarded(func))
        return func

    return decorator
