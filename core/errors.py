"""User-facing errors: one clear line, turned into a non-zero exit by the CLI."""

from __future__ import annotations

import reprlib


class AblateError(Exception):
    """An error caused by the user's input (a file, a spec, a CLI argument).

    The message says what was wrong, what was expected and, where useful, what to do.
    The CLI prints it as one line and exits with status 2, without a traceback.
    """


class SpecError(AblateError, ValueError):
    """An experiment, ablation or study spec is invalid."""


class DataError(AblateError, ValueError):
    """A data file is missing, unreadable or not in the expected layout."""


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = 80
    return r


_REPR = _bounded_repr()


def excerpt(value: object, limit: int = 80) -> str:
    """``repr(value)`` as an error message quotes it: one line of at most ``limit`` characters.

    Built with ``reprlib``, so it costs the same for a megabyte string or a structure of nested
    aliases that expands to gigabytes: a message names the value without echoing the input.

    Example:
        >>> excerpt("x" * 1000)
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'"
    """
    text = _REPR.repr(value)  # one line: repr escapes newlines
    return text if len(text) <= limit else text[: limit - 3] + "..."
