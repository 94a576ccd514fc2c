"""Checked argparse types for the CLI's numeric options.

``type=int`` takes ``-3`` and ``type=float`` takes ``nan`` and ``inf``: ``--timeout nan`` used to
start no trial and exit 0. Each option names one of these instead, so a bad value is argparse's
one usage line (``ablate: error: argument --timeout: expected a number of seconds > 0, got 'nan'``),
exit 2, before anything runs.

Example:
    >>> p.add_argument("--trials", type=positive_int, default=None)
"""

from __future__ import annotations

import argparse
import math

from ablate.errors import AblateError


def _int(text: str, low: int, expected: str, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (a count of trials, seeds, images)."""
    return _int(text, 1, "a whole number >= 1")


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (an index, a count that may be zero)."""
    return _int(text, 0, "a whole number >= 0")


def seed(text: str) -> int:
    """A seed NumPy and TensorFlow accept: 0 to 2**32 - 1."""
    from ablate.spec import MAX_SEED

    return _int(text, 0, f"a seed from 0 to {MAX_SEED}", MAX_SEED)


def port(text: str) -> int:
    """A TCP port to listen on: 1 to 65535."""
    return _int(text, 1, "a port from 1 to 65535", 65535)


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds): not 0, not negative, not nan or inf."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text[:40]!r}")
    return value


def workers(text: str) -> int:
    """Worker processes, 0 or more (0: create the campaign only), at most ``ablate.memory.max_workers()``."""
    return _bounded_workers(non_negative_int(text))


def _bounded_workers(n: int) -> int:
    from ablate.memory import check_workers

    try:
        check_workers(n)
    except AblateError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return n
