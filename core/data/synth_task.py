"""Synthetic data for any task: regions of random classes, each class with its own colour and texture.

The Mars generator (:mod:`ablate.data.synth`) stays the default data set and is left untouched
(its source identifies the default data). This one serves every other task, mostly for tests
and demos: an image is a Voronoi partition of a few seeds, each region one class; a class is a
colour (RGB tasks: the task's palette) or a grey level (grey tasks) with a class-specific stripe
texture and some noise, so a tiny model learns something in an epoch or two. When the task's
ignore label lies outside its classes (such as 255), a few small rectangles of each mask are
set to it (the image underneath keeps its class's look, as unlabelled pixels do in real data).

Example:
    >>> from ablate.task import Task
    >>> task = Task(height=48, width=96, channels=3, classes=["void", "grass", "road"], ignore_label=255)
    >>> arrays = generate_task(task, 40, n_test=8, seed=0)
    >>> arrays["images"].shape, arrays["masks"].shape, arrays["test_images"].shape
    ((40, 48, 96, 3), (40, 48, 96), (8, 48, 96, 3))
"""

from __future__ import annotations

import numpy as np

from ablate.errors import DataError
from ablate.task import Task

_SEEDS = (3, 8)  # regions per image (low, high exclusive): a few shapes of a few classes each
_NOISE = 0.05  # pixel noise (0-1 scale): small beside the spacing of the classes' looks
_IGNORE_BOXES = (1, 4)  # unlabelled rectangles per mask when the ignore label is outside the classes
_BATCH = 64  # images drawn at a time: bounds the (batch, seeds, H, W) distance array


def generate_task(task: Task, n: int, n_test: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic data set for ``task`` in the separate layout.

    Args:
        task: the task (size, channels, classes, ignore label).
        n: training pairs (>= 1).
        n_test: unlabelled test images (0 leaves out ``test_images``).
        seed: one seed, one data set.

    Returns:
        ``{"images": (n, H, W[, 3]) uint8, "masks": (n, H, W) uint8[, "test_images": (n_test, H, W[, 3]) uint8]}``;
        grey tasks get (n, H, W) images. Masks hold ``task.valid_labels`` only.

    Raises:
        DataError: ``n`` or ``n_test`` is not a whole number in range, or ``task`` is not a Task.
    """
    if not isinstance(task, Task):
        raise DataError(f"generate_task needs an ablate.task.Task; got {type(task).__name__}.")
    for name, value, low in (("n", n, 1), ("n_test", n_test, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"{name} must be an integer >= {low}; got {value!r}.")
    train_seq, test_seq = np.random.SeedSequence(int(seed)).spawn(2)
    images, masks = _many(task, np.random.default_rng(train_seq), int(n))
    arrays = {"images": images, "masks": _with_ignored(task, masks, np.random.default_rng(train_seq.spawn(1)[0]))}
    if n_test:
        arrays["test_images"] = _many(task, np.random.default_rng(test_seq), int(n_test))[0]
    return arrays


def _looks(task: Task) -> np.ndarray:
    """(classes, channels) base colour of each class in [0, 1]: the palette (RGB) or spaced grey levels."""
    k = task.num_classes
    if task.channels == 3:
        base = np.asarray(task.palette, dtype=np.float32) / 255.0
        return 0.15 + 0.7 * base  # away from 0 and 1, so noise and texture are not clipped
    return np.linspace(0.15, 0.85, k, dtype=np.float32)[np.random.default_rng(k).permutation(k)][:, None]


def _many(task: Task, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    h, w, c = task.input_shape
    images = np.empty((n, h, w, c), dtype=np.uint8)
    masks = np.empty((n, h, w), dtype=np.uint8)
    for start in range(0, n, _BATCH):
        size = min(_BATCH, n - start)
        images[start : start + size], masks[start : start + size] = _batch(task, rng, size)
    return (images[..., 0] if c == 1 else images), masks


def _batch(task: Task, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    h, w, _ = task.input_shape
    seeds = rng.integers(*_SEEDS)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centres = rng.random((n, seeds, 2)).astype(np.float32) * np.array([h, w], np.float32)
    stretch = rng.uniform(0.5, 2.0, (n, seeds, 1, 1)).astype(np.float32)  # uneven region sizes
    dist = ((yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2) * stretch
    region = dist.argmin(axis=1)  # (n, h, w): the seed each pixel belongs to
    labels = rng.integers(0, task.num_classes, (n, seeds))
    masks = np.take_along_axis(labels, region.reshape(n, -1), axis=1).reshape(n, h, w).astype(np.uint8)
    looks = _looks(task)[masks]  # (n, h, w, c)
    period = 3.0 + masks.astype(np.float32)  # each class its own stripe spacing
    texture = 0.06 * np.sin(2 * np.pi * (yy + xx) / period)[..., None]
    noise = rng.normal(0.0, _NOISE, looks.shape).astype(np.float32)
    images = np.clip((looks + texture + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return images, masks


def _with_ignored(task: Task, masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Masks with a few rectangles set to the ignore label, when it lies outside the classes."""
    if task.ignore_label is None or task.ignore_is_class:
        return masks
    n, h, w = masks.shape
    for i in range(n):
        for _ in range(rng.integers(*_IGNORE_BOXES)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            masks[i, y : y + max(1, h // 8), x : x + max(1, w // 8)] = task.ignore_label
    return masks
