"""The task a data file implies, and what a task says about the labels a mask may hold.

Where a spec gives no ``task:`` section, the loader infers one from the data (see
:func:`infer_task`): the course layout at 64x128 with labels 0-4 is the Mars task; anything
else takes its size and channels from the arrays, one class per label up to the largest
(``class_0`` ..., or the names in the file's ``classes`` array), and 255 as the ignore label when
it occurs (the common "unlabelled" value).

Example:
    >>> infer_task(48, 96, 3, {0, 1, 2, 6, 255}).describe()
    '48x96x3, 7 classes (class_0, ..., class_6), ignore label 255, scored: class_0, ..., class_6'
    >>> infer_task(64, 128, 1, {0, 1, 4}, course=True) is MARS
    True
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ablate.data.layout import CLASSES_KEY
from ablate.errors import DataError, SpecError
from ablate.task import MARS, Task, task_from_dict

IGNORE_VALUE = 255  # the common "unlabelled" value; inferred as the ignore label when a mask holds it


def class_names(arrays: dict[str, np.ndarray], path: str = "the data file") -> list[str] | None:
    """The class names a data file stores (its ``classes`` array: 1-D strings, label k named by
    entry k), or None when it stores none; a one-line DataError when the array is not that."""
    names = arrays.get(CLASSES_KEY)
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind != "U" or not 2 <= len(names) <= 255:
        raise DataError(f"'{CLASSES_KEY}' in '{path}' has shape {names.shape} and dtype {names.dtype}; expected "
                        "2-255 class names as a 1-D string array (np.array(['soil', 'rock', ...])), label k named "
                        "by entry k.")
    return [str(n) for n in names]


def infer_task(height: int, width: int, channels: int, labels: Iterable[int], course: bool = False,
               names: list[str] | None = None) -> Task:
    """The task of data with this size, channels and set of mask labels.

    Args:
        height, width, channels: of the images.
        labels: every value the masks hold (0-255).
        course: the file is in the course layout (``training_set`` of image/mask pairs).
        names: the class names the file stores (:func:`class_names`), or None.

    Returns:
        :data:`ablate.task.MARS` for course-layout 64x128 grey data with labels within 0-4 (and
        Mars's class names, or none); otherwise a task with classes ``names`` or ``class_0`` ..
        ``class_{K-1}`` (K = the largest label but 255, plus one, at least 2), ignore label 255
        when it occurs, else none.

    Raises:
        DataError: ``names`` leaves a label the masks hold unnamed, or is not valid class names.
    """
    present = {int(v) for v in labels}
    if course and (height, width, channels) == MARS.input_shape and present <= set(range(MARS.num_classes)) \
            and names in (None, list(MARS.classes)):
        return MARS
    labelled = [v for v in present if v != IGNORE_VALUE]
    k = max(2, max(labelled, default=0) + 1)
    if names is not None and len(names) < k:
        raise DataError(f"the file's '{CLASSES_KEY}' names {len(names)} classes ({', '.join(names[:8])}) but its "
                        f"masks hold label {k - 1}; expected a name for every label 0-{k - 1}.")
    classes = names if names is not None else [f"class_{i}" for i in range(k)]
    raw = {"height": height, "width": width, "channels": channels, "classes": classes,
           "ignore_label": IGNORE_VALUE if IGNORE_VALUE in present else None}
    try:
        return task_from_dict(raw)
    except SpecError as e:
        raise DataError(f"The class names in the file's '{CLASSES_KEY}' array make no valid task: {e}") from None


def label_ranges(values: Iterable[int]) -> str:
    """Sorted labels as runs: ``0-6 and 255``, ``0-4``, ``1, 3 and 4``."""
    vals = sorted({int(v) for v in values})
    runs: list[list[int]] = []
    for v in vals:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    parts = [p for a, b in runs for p in ([f"{a}-{b}"] if b > a + 1 else [str(v) for v in range(a, b + 1)])]
    return ", ".join(parts) if len(parts) < 2 else ", ".join(parts[:-1]) + " and " + parts[-1]


def label_legend(task: Task) -> str:
    """What each valid label means: ``0 background, 1 soil, ...`` (and ``255 ignored``)."""
    names = [f"{k} {task.classes[k]}" for k in range(task.num_classes)]
    if len(names) > 12:
        names = [*names[:5], "...", *names[-2:]]
    if task.ignore_label is not None and not task.ignore_is_class:
        names.append(f"{task.ignore_label} ignored")
    return ", ".join(names)


def task_from_file(path: str | os.PathLike[str]) -> Task:
    """The task in a YAML/JSON file: a task mapping, or a spec with a ``task:`` section.

    Raises:
        SpecError: the file cannot be read, is not YAML/JSON within ``ablate.yamlio``'s limits (1 MiB,
            no alias bombs, no repeated keys), or the task is not valid.
    """
    from ablate.yamlio import load_file

    src = Path(path)
    raw = load_file(src, "Task file")
    if isinstance(raw, dict) and isinstance(raw.get("task"), dict):
        return task_from_dict(raw["task"], where=f"task in '{src}'")
    return task_from_dict(raw, where=f"task in '{src}'")
