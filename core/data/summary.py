"""Summarise a data ``.npz``: its task, arrays, class shares and duplicate-mask groups (``ablate data inspect``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ablate.data.clean import find_outliers
from ablate.data.loader import file_fingerprint, from_arrays, read_arrays
from ablate.task import Task, task_from_dict

_SHOWN_GROUPS = 8  # largest duplicate-mask groups listed in the summary


def inspect_npz(path: str | os.PathLike[str], min_group: int = 3, task: Task | None = None) -> dict[str, Any]:
    """Describe a data ``.npz`` (either layout) after validating it against ``task`` or inferring its task.

    Args:
        path: the ``.npz`` file.
        min_group: smallest group of identical masks reported (see :func:`find_outliers`).
        task: the task to check the data against; None infers it from the file.

    Returns:
        A JSON-serialisable dict: ``path``, ``fingerprint``, ``task`` (the task's dict), ``arrays``
        (name -> shape, dtype), ``n_train``, ``n_test``, ``has_groups``, ``class_shares`` (label as a
        string -> pixel fraction, for every valid label of the task),
        ``single_class_masks``, ``duplicate_groups`` (groups of >= min_group identical masks),
        ``largest_groups`` (size, classes, outlier, reason) and ``outliers`` (pairs flagged).

    Raises:
        DataError: the file is missing, unreadable, in neither layout or does not fit ``task``.

    Example:
        >>> print(format_summary(inspect_npz("../shared/data/mars_ai4mars_64x128.npz")))
    """
    arrays = read_arrays(path, keys=None)  # every array: the summary lists them all
    fingerprint = file_fingerprint(path)
    data = from_arrays(arrays, str(path), fingerprint, task=task)
    labels = data.task.valid_labels
    counts = np.bincount(data.masks.ravel(), minlength=256)[list(labels)]
    labels_per_mask = np.array([len(np.unique(m)) for m in data.masks])
    report = find_outliers(data.masks, min_group, images=data.images, ignore_label=data.task.ignore_label)
    return {
        "path": str(path),
        "fingerprint": fingerprint,
        "task": data.task.to_dict(),
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "n_train": int(len(data.masks)),
        "n_test": 0 if data.test_images is None else int(len(data.test_images)),
        "has_groups": data.groups is not None,
        "class_shares": {str(k): float(c / counts.sum()) for k, c in zip(labels, counts, strict=True)},
        "single_class_masks": int((labels_per_mask == 1).sum()),
        "min_group": min_group,
        "duplicate_groups": len(report.groups),
        "largest_groups": [
            {key: g[key] for key in ("size", "classes", "distinct_images", "outlier", "reason")}
            for g in report.groups[:_SHOWN_GROUPS]
        ],
        "outliers": len(report.removed),
    }


def format_summary(d: dict[str, Any]) -> str:
    """Render :func:`inspect_npz`'s dict as a few aligned lines for the terminal."""
    task = task_from_dict(d["task"])
    lines = [f"{d['path']}  (sha256 {d['fingerprint']})", f"  task: {task.describe()}"]
    for name, info in d["arrays"].items():
        lines.append(f"  {name:<14} {tuple(info['shape'])!s:<22} {info['dtype']}")
    lines.append(f"  pairs: {d['n_train']}   test images: {d['n_test']}   groups: {'yes' if d['has_groups'] else 'no'}")
    shares = "  ".join(f"{k} {_name(task, int(k))} {v:.1%}" for k, v in d["class_shares"].items())
    lines.append(f"  class pixel shares: {shares}")
    lines.append(f"  single-class masks: {d['single_class_masks']}")
    groups = f"duplicate-mask groups (>= {d.get('min_group', 3)} identical): {d['duplicate_groups']}"
    lines.append(f"  {groups}; outlier pairs: {d['outliers']}")
    for g in d["largest_groups"]:
        flag = "OUTLIER" if g["outlier"] else "kept   "
        lines.append(f"    {flag} {g['size']:>5} x classes {g['classes']}: {g['reason']}")
    return "\n".join(lines)


def _name(task: Task, label: int) -> str:
    return task.label(label) if label < task.num_classes else "ignored"
