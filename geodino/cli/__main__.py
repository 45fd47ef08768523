"""``python -m geodino.cli ...``: the same as the ``geodino`` console script."""

from geodino.cli import main

main()
