"""geodino's command line: ``python cli.py --help`` (the same as the ``geodino`` console script)."""

from geodino.cli import main

if __name__ == "__main__":
    main()
