"""The ``ablate`` command line. Each command group lives in its own module."""

from ablate.cli.main import main

__all__ = ["main"]
