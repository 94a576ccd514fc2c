"""The two ``.npz`` layouts a data file may have, and their shapes checked (against a task when given).

- the course layout: ``training_set`` (N, 2, H, W) grey image/mask pairs, optional ``test_set`` (M, H, W);
- the separate layout: ``images`` (N, H, W) or (N, H, W, C) with C 1 or 3, ``masks`` (N, H, W),
  optional ``test_images`` (M, H, W[, C]).

Either may hold ``groups`` (N,) source ids (pairs of one source stay on one side of the split) and
``classes``, the class names by label (a string array, see ``ablate.data.infer``).

Only shapes and dtypes are looked at here, so the same checks run on zero-byte views built from
the arrays' headers (``ablate.data.loader.check_header``) and on the loaded arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ablate.errors import DataError
from ablate.task import Task

CLASSES_KEY = "classes"  # optional: the class names by label (``data import-folder --classes``)
COURSE_KEYS = ("training_set", "test_set", "groups", CLASSES_KEY)  # the course layout's arrays; others are not read
SEPARATE_KEYS = ("images", "masks", "test_images", "groups", CLASSES_KEY)  # the separate layout's
DATA_KEYS = (*COURSE_KEYS, "images", "masks", "test_images")
LAYOUT_HINT = ("expected the course layout ('training_set' of (N, 2, H, W) image/mask pairs) or separate "
               "'images' and 'masks' arrays")


def layout_keys(found: Sequence[str], path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The arrays of the file's layout: the course layout's when it has ``training_set``, else the
    separate layout's when it has ``images`` and ``masks``; a DataError naming the keys otherwise."""
    if "training_set" in found:
        return COURSE_KEYS
    if "images" in found and "masks" in found:
        return SEPARATE_KEYS
    raise DataError(f"'{path}' has no 'training_set' array (found keys: {sorted(found)[:10]}); {LAYOUT_HINT}.")


@dataclass(frozen=True)
class Parts:
    """The raw arrays of either layout, shapes checked; ``names`` are what messages call them."""

    images: np.ndarray  # (N, H, W) or (N, H, W, C)
    masks: np.ndarray  # (N, H, W)
    test: np.ndarray | None
    names: tuple[str, str, str]  # images, masks, test
    course: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images."""
        h, w = self.images.shape[1:3]
        return h, w, 1 if self.images.ndim == 3 else self.images.shape[3]


def split_layout(arrays: dict[str, np.ndarray], path: str, task: Task | None) -> Parts:
    """The images, masks and test images of either layout, their shapes and dtypes checked (against
    ``task``'s size and channels when given); a one-line DataError otherwise."""
    layout_keys(list(arrays), path)
    parts = _course(arrays, task) if "training_set" in arrays else _separate(arrays, task)
    for arr, name in ((parts.images, parts.names[0]), (parts.test, parts.names[2])):
        if arr is not None and arr.dtype.kind not in "uif":
            raise DataError(f"'{name.split()[0]}' has dtype {arr.dtype}; expected uint8 or float images.")
    return parts


def _course(arrays: dict[str, np.ndarray], task: Task | None) -> Parts:
    train = arrays["training_set"]
    if task is not None and task.channels != 1:
        raise DataError(f"'training_set' holds grey image/mask pairs (the course layout) but the task expects "
                        f"{task.channels} channels; give RGB data as 'images' (N, H, W, 3) and 'masks' arrays.")
    if task is None:
        expected = "(N, 2, 64, 128) for the course's Mars data, or (N, 2, H, W) for grey H x W images"
        ok = train.ndim == 4 and train.shape[1] == 2
    else:
        expected = f"(N, 2, {task.height}, {task.width}) for the task's {task.height}x{task.width}x1 input"
        ok = train.shape[1:] == (2, task.height, task.width)
    if not ok:
        raise DataError(f"'training_set' has shape {train.shape}; expected {expected}.")
    nonempty(train, "training_set")
    test = arrays.get("test_set")
    if test is not None:
        if test.shape[1:] != train.shape[2:] or test.ndim != 3:
            raise DataError(f"'test_set' has shape {test.shape}; expected (M, {train.shape[2]}, {train.shape[3]}) "
                            "images of the training images' size.")
        nonempty(test, "test_set")
    return Parts(train[:, 0], train[:, 1], test, ("training_set images", "training_set", "test_set"), True)


def _channels(arr: np.ndarray) -> int | None:
    """1 or 3 for (N, H, W) or (N, H, W, 1|3) images; None for any other shape."""
    if arr.ndim == 3:
        return 1
    return int(arr.shape[3]) if arr.ndim == 4 and arr.shape[3] in (1, 3) else None


def _separate(arrays: dict[str, np.ndarray], task: Task | None) -> Parts:
    images, masks, test = arrays["images"], arrays["masks"], arrays.get("test_images")
    channels = _channels(images)
    if channels is None:
        raise DataError(f"'images' has shape {images.shape}; expected (N, H, W) grey or (N, H, W, C) images "
                        "with C 1 (grey) or 3 (RGB).")
    nonempty(images, "images")
    h, w = images.shape[1:3]
    if masks.shape != images.shape[:3]:
        raise DataError(f"'masks' has shape {masks.shape}; expected {images.shape[:3]}: one (H, W) label image per "
                        "image in 'images'.")
    if test is not None:
        if _channels(test) != channels or test.shape[1:3] != (h, w):
            rgb = ", 3" if channels == 3 else ""
            raise DataError(f"'test_images' has shape {test.shape}; expected (M, {h}, {w}{rgb}) images of the "
                            "training images' size and channels.")
        nonempty(test, "test_images")
    if task is not None and (h, w) != (task.height, task.width):
        raise DataError(f"'images' are {h}x{w} (shape {images.shape}); the task expects {task.height}x{task.width} "
                        f"images: resize them (ablate data import-folder --size {task.height}x{task.width}) or set "
                        "the task's height and width.")
    if task is not None and channels != task.channels:
        kinds = {1: "1 (grey)", 3: "3 (RGB)"}
        raise DataError(f"'images' have {kinds[channels]} channels (shape {images.shape}); the task expects "
                        f"{kinds[task.channels]}: convert them (ablate data import-folder --grey/--rgb) or set "
                        "task.channels.")
    return Parts(images, masks, test, ("images", "masks", "test_images"), False)


def nonempty(arr: np.ndarray, name: str) -> None:
    if arr.shape[0] == 0:
        raise DataError(f"'{name}' is empty (shape {arr.shape}); expected at least one entry.")
