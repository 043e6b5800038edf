"""The typer application every sub-command module registers itself on."""

from __future__ import annotations

import functools
import os
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
DEBUG_ENV = "COVIDCT_DEBUG"
"""Set to 1 to see the Python traceback of an unexpected error (developers only)."""
INTERNAL_ERROR_EXIT = 1


def guarded(func: F) -> F:
    """Wrap a command: never a traceback.

    A `CovidCTError` prints its message and exits with its code; running out of memory or any other
    unexpected exception prints one line saying what happened (a bug to report) and exits 1.
    ``COVIDCT_DEBUG=1`` re-raises unexpected exceptions so developers see the traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return func(*args, **kw)
        except CovidCTError as exc:
            _print_error(str(exc))
            raise typer.Exit(code=exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            _print_error(
                "out of memory while running this command; free memory, use smaller inputs, or lower the "
                "budgets (COVIDCT_MAX_VOLUME_BYTES)."
            )
            raise typer.Exit(code=INTERNAL_ERROR_EXIT) from None
        except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback to users
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            _print_error(
                f"unexpected {type(exc).__name__}: {exc}. This is a covidct bug: please report it with the "
                f"command you ran (set {DEBUG_ENV}=1 to see the traceback)."
            )
            raise typer.Exit(code=INTERNAL_ERROR_EXIT) from None

    return wrapper  # type: ignore[return-value]


def _print_error(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a sub-command on `app`, wrapped by `guarded`."""

    def decorator(func: F) -> F:
        app.command(name=name, **kwargs)(guarded(func))
        return func

    return decorator
