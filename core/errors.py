"""User-facing errors: one clear line, turned into a non-zero exit by the CLI."""

from __future__ import annotations


class AblateError(Exception):
    """An error caused by the user's input (a file, a spec, a CLI argument).

    The message says what was wrong, what was expected and, where useful, what to do.
    The CLI prints it as one line and exits with status 2, without a traceback.
    """


class SpecError(AblateError, ValueError):
    """An experiment, ablation or study spec is invalid."""


class DataError(AblateError, ValueError):
    """A data file is missing, unreadable or not in the expected layout."""
