"""The one rule for names a user gives: ablations, studies, factors and variants, specs, experiments,
registered models. Such a name becomes a folder (``reports/NAME``, ``exports/NAME``), an MLflow
experiment or registered model, an Optuna study and a tag value, so it must be safe in all of
them: no path separators, no ``..``, no spaces or quotes, not too long.

``check_name`` is called where the name enters (the file loaders, the CLI), so a bad name stops
the command before anything is written; ``inside`` checks a path built from a name (or anything
else) stays in the folder it belongs to.

Example:
    >>> check_name("skip-types", "Ablation name")
    'skip-types'
    >>> check_name("../x", "Ablation name")
    Traceback (most recent call last):
    ablate.errors.SpecError: Ablation name '../x' is not a safe name; expected 1-100 letters, digits, ...
"""

from __future__ import annotations

import re
from pathlib import Path

from ablate.errors import SpecError, excerpt

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RULE = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"


def is_safe(value: object) -> bool:
    return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None and ".." not in value


def check_name(value: object, what: str) -> str:
    """Returns ``value`` if it is a safe name, else raises a SpecError naming ``what`` and the rule.

    Args:
        value: the name as given (any type: a YAML ``name: 3`` arrives as an int).
        what: what the name is, as the message starts ("Ablation name", "--name").
    """
    if not is_safe(value):
        raise SpecError(f"{what} {excerpt(value, 60)} is not a safe name; expected {RULE} "
                        f"(it names folders, MLflow runs and Optuna studies).")
    return str(value)


def inside(root: str | Path, name: str, what: str) -> Path:
    """``root / name``, refused unless it resolves inside ``root`` (symbolic links followed).

    The default report and export folders are built from names; this keeps them in their folder
    even for a name that did not pass ``check_name`` (one read back from an older store).
    """
    base = Path(root).resolve()
    path = (Path(root) / name).resolve()
    if path == base or base not in path.parents:
        raise SpecError(f"{what} {excerpt(name, 60)} leads outside the folder '{root}'; "
                        f"expected a plain name ({RULE}).")
    return Path(root) / name
