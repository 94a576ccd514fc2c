"""The task a data file implies, and what a task says about the labels a mask may hold.

Where a spec gives no ``task:`` section, the loader infers one from the data (see
:func:`infer_task`): the course layout at 64x128 with labels 0-4 is the Mars task; anything
else takes its size and channels from the arrays, one class per label up to the largest
(``class_0`` ...), and 255 as the ignore label when it occurs (the common "unlabelled" value).

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

from ablate.errors import DataError
from ablate.task import MARS, Task, task_from_dict

IGNORE_VALUE = 255  # the common "unlabelled" value; inferred as the ignore label when a mask holds it


def infer_task(height: int, width: int, channels: int, labels: Iterable[int], course: bool = False) -> Task:
    """The task of data with this size, channels and set of mask labels.

    Args:
        height, width, channels: of the images.
        labels: every value the masks hold (0-255).
        course: the file is in the course layout (``training_set`` of image/mask pairs).

    Returns:
        :data:`ablate.task.MARS` for course-layout 64x128 grey data with labels within 0-4;
        otherwise a task with classes ``class_0`` .. ``class_{K-1}`` (K = the largest label but
        255, plus one, at least 2), ignore label 255 when it occurs, else none.
    """
    present = {int(v) for v in labels}
    if course and (height, width, channels) == MARS.input_shape and present <= set(range(MARS.num_classes)):
        return MARS
    classes = [v for v in present if v != IGNORE_VALUE]
    k = max(2, max(classes, default=0) + 1)
    return Task(height=height, width=width, channels=channels, classes=[f"class_{i}" for i in range(k)],
                ignore_label=IGNORE_VALUE if IGNORE_VALUE in present else None)


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
        DataError: the file is missing or not YAML/JSON; SpecError: the task is not valid.
    """
    import yaml

    src = Path(path)
    try:
        raw = yaml.safe_load(src.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"Task file '{src}' is not readable ({e.strerror or e}); expected a YAML or JSON "
                        "task.") from None
    except yaml.YAMLError as e:
        raise DataError(f"Task file '{src}' is not valid YAML or JSON ({str(e).splitlines()[0]}).") from None
    if isinstance(raw, dict) and isinstance(raw.get("task"), dict):
        return task_from_dict(raw["task"], where=f"task in '{src}'")
    return task_from_dict(raw, where=f"task in '{src}'")
