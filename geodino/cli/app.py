"""The Typer application and the error guard shared by every subcommand."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from geodino.errors import GeodinoError

app = typer.Typer(
    name="geodino",
    help="Georeferenced DINOv3 features and predictions for satellite and aerial scenes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)  # paths and messages stay on one line when piped, not folded at 80 columns
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., object])


def guard(fn: F) -> F:
    """Turn a :class:`GeodinoError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except GeodinoError as exc:
            err_console.print(f"geodino: error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
