"""``python -m geodino ...``: the same as the ``geodino`` console script."""

from geodino.cli import main

main()
