"""``python -m ferroute``: the same command line as the ``ferroute`` script."""

from .cli import main

main()
