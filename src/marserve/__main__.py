"""Entry point for ``python -m marserve``."""

from marserve.cli.main import main

main()
