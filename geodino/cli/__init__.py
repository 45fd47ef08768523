"""Command-line interface: a thin layer over library functions (one module per command group)."""

from geodino.allocator import limit_malloc_arenas
from geodino.cli import demo, encode, models, predict  # noqa: F401  (registers the commands)
from geodino.cli.app import COMPLETE_VAR, app


def main() -> None:
    """Entry point of the ``geodino`` console script and of ``python cli.py``."""
    limit_malloc_arenas()  # a process of ours: before any thread starts
    app(complete_var=COMPLETE_VAR)  # the same variable under any program name (python -m geodino)


__all__ = ["app", "main"]
