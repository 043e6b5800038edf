"""The typer application every sub-command module registers itself on."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

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
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a sub-command on `app`, wrapped by `guarded`."""

    def decorator(func: F) -> F:
        app.command(name=name, **kwargs)(guarded(func))
        return func

    return decorator


def _print_version(value: bool) -> None:
    if value:
        from covidct import __version__

        typer.echo(f"covidct {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                 help="Print covidct's version and exit."),
) -> None:
    """COVID-19 detection in chest CT (research use only, not for diagnosis)."""


_LIST_TYPE = re.compile(r"^<list\[(\w+)\]>$")


def _patch_help_types() -> None:
    """Show switches as switches in --help: no type after a flag (typer >= 0.2x prints `<bool>` there),
    and `<path>...` instead of `<list[Path]>` for repeatable options and variadic arguments."""
    from typer import core

    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        original = getattr(cls, "display_type_rich", None)
        if original is None or getattr(original, "_covidct", False):
            continue

        def display_type_rich(self: Any, ctx: Any, _original: Any = original) -> str | None:
            if getattr(self, "is_flag", False) or getattr(self, "count", False):
                return None
            label = _original(self, ctx)
            match = _LIST_TYPE.match(label or "")
            return f"<{match.group(1).lower()}>..." if match else label

        display_type_rich._covidct = True  # type: ignore[attr-defined]
        cls.display_type_rich = display_type_rich  # type: ignore[union-attr]


_patch_help_types()
