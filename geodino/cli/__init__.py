"""Command-line interface: a thin layer over library functions (one module per command group)."""

from geodino.cli import demo, encode, models, predict  # noqa: F401  (registers the commands)
from geodino.cli.app import app


def main() -> None:
    """Entry point of the ``geodino`` console script and of ``python cli.py``."""
    app()


__all__ = ["app", "main"]
