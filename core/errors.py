"""User-facing errors: one clear line, turned into a non-zero exit by the CLI."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any


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


def validation_error(error: Any, model: Any, section: str = "", context: str = "") -> SpecError:
    """One SpecError line for a pydantic ``ValidationError`` of ``model`` (its first error), in the
    one style of every spec message: ``Unknown key 'k' in <section>. Allowed keys: ...`` or
    ``Invalid value for '<section>.<key>': <why> (got <value>).``

    ``section`` prefixes the error's location (``"task"`` for a task read on its own); ``context``
    says where the mapping came from (``"task in 'file.yaml'"``) and leads the line.
    """
    err = error.errors()[0]
    loc = [*(section.split(".") if section else []), *(str(x) for x in err["loc"])]
    lead = f"{context}: " if context else ""
    if err["type"] == "extra_forbidden":
        where = ".".join(loc[:-1]) or "the spec"
        allowed = _fields_at(model, [str(x) for x in err["loc"][:-1]])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        tail = (f"Allowed keys: {', '.join(allowed)}." + (f" Did you mean '{close[0]}'?" if close else "")) \
            if allowed else "Check the spelling; `ablate spec FILE` shows every valid key."
        return SpecError(f"{lead}Unknown key {excerpt(loc[-1])} in {where}. {tail}")
    msg = err["msg"].removeprefix("Value error, ")
    return SpecError(f"{lead}Invalid value for '{'.'.join(loc)}': {msg} (got {excerpt(err.get('input'))}).")


def _fields_at(model: Any, loc: list[str]) -> list[str]:
    """The field names of the pydantic model found at ``loc`` below ``model`` (through optional
    fields), or [] where the location is not a model's (a free mapping, a list)."""
    import typing

    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        options = typing.get_args(field.annotation) or (field.annotation,)
        model = next((o for o in options if isinstance(o, type) and hasattr(o, "model_fields")), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))
