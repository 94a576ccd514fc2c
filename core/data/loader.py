"""Load and validate a segmentation ``.npz`` against its task and split it into train/validation.

Two layouts are read:

- the course layout: ``training_set`` (N, 2, H, W) with ``[:, 0]`` grey images (0-255, or 0-1
  floats) and ``[:, 1]`` masks, optional ``test_set`` (M, H, W) images;
- the separate layout: ``images`` (N, H, W) or (N, H, W, C) with C 1 or 3, ``masks`` (N, H, W),
  optional ``test_images`` (M, H, W[, C]).

Both may hold ``groups`` (N,) source ids. The data is checked against a given task (size,
channels, labels) or, without one, the task is inferred from it (:mod:`ablate.data.infer`: the
course's 64x128 file is the Mars task). Every problem is one :class:`~ablate.errors.DataError`
line when the file is loaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ablate.data import npz
from ablate.data.infer import class_names, infer_task, label_legend, label_ranges
from ablate.data.layout import COURSE_KEYS, DATA_KEYS, LAYOUT_HINT, layout_keys, split_layout
from ablate.errors import DataError
from ablate.task import MARS, Task

_CHUNK = 1024  # rows validated at a time: bounds memory on float64 files (~1 GB for 7200 pairs)


@dataclass(frozen=True)
class SegData:
    """A validated segmentation dataset and its task.

    Attributes:
        images: (N, H, W, C) float32 in [0, 1].
        masks: (N, H, W) uint8 labels, each one of ``task.valid_labels``.
        test_images: (M, H, W, C) float32 in [0, 1], or None when the file has no test set.
        fingerprint: first 16 hex chars of the file's sha256 (identifies the data in MLflow).
        path: the file it was loaded from.
        groups: (N,) int64 source-image ids (pairs of one group stay in one split), or None.
        task: the task the data was checked against (given, or inferred from the file).

    Example:
        >>> data = load_npz("../shared/data/mars_ai4mars_64x128.npz", limit=100)
        >>> data.images.shape, data.masks.dtype, data.task.is_mars
        ((100, 64, 128, 1), dtype('uint8'), True)
    """

    images: np.ndarray
    masks: np.ndarray
    test_images: np.ndarray | None
    fingerprint: str
    path: str
    groups: np.ndarray | None = None
    task: Task = MARS


MarsData = SegData  # the name before tasks other than Mars were read


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Return the first 16 hex characters of the sha256 of the file's bytes (read streaming)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_fingerprint(path: str | os.PathLike[str]) -> str:
    """:func:`file_fingerprint`, computed once per process per version of the file.

    The cache key is (real path, inode, size, mtime_ns): a file rewritten or replaced in place gets
    a new key, so hashing a spec many times reads a 72 MB file once.

    Raises:
        OSError: the file cannot be read (e.g. FileNotFoundError).
    """
    return _fingerprint_of(*_version(path))


def _version(path: str | os.PathLike[str]) -> tuple[str, int, int, int]:
    """(real path, inode, size, mtime_ns): what a per-process cache of a file's figures is keyed by.

    Raises:
        OSError: the file cannot be read (e.g. FileNotFoundError).
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_ino, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _fingerprint_of(real: str, inode: int, size: int, mtime_ns: int) -> str:
    return file_fingerprint(real)


def data_identity(path: str | os.PathLike[str]) -> str:
    """What identifies the data of a file in a run's identity: its content fingerprint.

    A file that does not exist (yet) is identified as ``missing:<absolute path>`` rather than
    raising here: the spec hash stays computable (``ablate spec``, dry runs, another machine) and
    the loader raises its clear DataError when a run actually loads it.

    Example:
        >>> data_identity("../shared/data/mars_ai4mars_64x128.npz")
        '3f0c...'
    """
    try:
        return cached_fingerprint(path)
    except FileNotFoundError:
        return f"missing:{os.path.abspath(path)}"
    except OSError:  # a folder, no permission: the loader names the problem when the run starts
        return f"unreadable:{os.path.abspath(path)}"


def read_arrays(path: str | os.PathLike[str], keys: Sequence[str] | None = DATA_KEYS) -> dict[str, np.ndarray]:
    """Read the arrays of the file's layout (those among ``keys``; None reads every array).

    Only the named arrays are decompressed, each after its header passed the checks of
    :mod:`ablate.data.npz` (no object arrays, a size cap, a zip entry matching its header), so an
    unused or oversized member costs nothing.

    Args:
        path: the ``.npz`` file.
        keys: the arrays to read if present.

    Returns:
        name -> array, in the file's dtypes.

    Raises:
        DataError: the file is missing, not an ``.npz``, truncated/corrupt, in neither layout,
            or holds an object or oversized array.
    """
    layout = layout_keys(npz.array_keys(path), path)
    required = layout[:1] if layout == COURSE_KEYS else layout[:2]
    wanted = None if keys is None else [k for k in keys if k in layout]
    return npz.read_arrays(path, wanted, required=required, hint=LAYOUT_HINT)


def header_shape(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(H, W, C) of the file's images, from its array headers (:func:`check_header`): once per
    process per version of the file (``_version``), as :func:`cached_fingerprint`.

    Raises:
        DataError: as :func:`check_header`.
    """
    try:
        version = _version(path)
    except OSError:
        return check_header(path)  # its own one-line error for a missing or unreadable file
    return _header_shape_of(*version)


@functools.lru_cache(maxsize=64)
def _header_shape_of(real: str, inode: int, size: int, mtime_ns: int) -> tuple[int, int, int]:
    return check_header(real)


def check_header(path: str | os.PathLike[str], task: Task | None = None) -> tuple[int, int, int]:
    """Check an ``.npz`` against its layout (and ``task``) from its zip directory and array headers alone.

    What a campaign runs before it queues anything: no array is decompressed (only each array's
    ``.npy`` header, see :mod:`ablate.data.npz`), so a missing, truncated or wrongly shaped file
    is one clear error at once rather than a failure in every trial. Values (labels, finite
    pixels) and the bytes past each header are checked when :func:`load_npz` reads the file.

    Returns:
        (H, W, C) of the images.

    Raises:
        DataError: the file is missing, not an ``.npz``, truncated, or its arrays have the wrong
            names, shapes or dtypes (or a size or channel count other than the task's).
    """
    found = npz.array_keys(path)
    members = {key: npz.open_member(path, key, LAYOUT_HINT) for key in layout_keys(found, path) if key in found}
    # Zero-byte views with each header's shape and dtype, so that the loader's own checks (and messages) apply.
    views = {key: np.broadcast_to(np.zeros((), m.dtype), m.shape) for key, m in members.items()}
    parts = split_layout(views, str(path), task)
    _read_groups(views, len(parts.images))
    return parts.shape


def _check_images(arr: np.ndarray, name: str) -> float:
    """Validate image values chunk by chunk; return the global maximum."""
    if arr.dtype.kind not in "uif":
        raise DataError(f"'{name}' has dtype {arr.dtype}; expected uint8 or float images.")
    lo, hi = np.inf, -np.inf
    for start in range(0, len(arr), _CHUNK):
        chunk = arr[start : start + _CHUNK]
        if arr.dtype.kind == "f" and not np.isfinite(chunk).all():
            bad = start + int(np.argmax(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)))
            raise DataError(
                f"'{name}' holds NaN or inf values (first at index {bad}); expected finite values 0-255 or 0-1."
            )
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if lo < 0 or hi > 255:
        raise DataError(f"'{name}' values span [{lo:g}, {hi:g}]; expected 0-255 (or 0-1 floats). Rescale the images.")
    return hi


def scale_images(arr: np.ndarray, hi: float | None = None) -> np.ndarray:
    """Return images as float32 in [0, 1] with a trailing channel axis.

    Integer images and float images whose maximum exceeds 1.0 are divided by 255; float images
    already within [0, 1] are kept. uint8 and integral float64 inputs give identical results.

    Args:
        arr: (N, H, W) grey images (a channel axis is added) or (N, H, W, C) images.
        hi: the array's maximum when already known.
    """
    if hi is None:
        hi = float(arr.max()) if arr.size else 0.0
    out = arr.astype(np.float32)
    if arr.dtype.kind in "ui" or hi > 1.0:
        out /= np.float32(255.0)
    return out[..., None] if out.ndim == 3 else out


def _outside(values: Sequence[int], name: str, task: Task | None) -> DataError:
    if task is None:
        return DataError(f"Masks in '{name}' hold labels {list(values)} outside 0-255; expected integer labels "
                         "(0-254 for classes, 255 for unlabelled pixels).")
    return DataError(f"Masks in '{name}' hold labels {list(values)} outside {label_ranges(task.valid_labels)}, the "
                     f"task's labels; expected {label_legend(task)}.")


def _to_masks(arr: np.ndarray, name: str, task: Task | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate mask labels chunk by chunk; return them as uint8 with the pixel count of each value 0-255.

    With a task, every label must be one of ``task.valid_labels``; without one, any 0-255.
    """
    if arr.dtype.kind not in "uif":
        raise DataError(f"Masks in '{name}' have dtype {arr.dtype}; expected integer labels (uint8 or float).")
    out = np.empty(arr.shape, dtype=np.uint8)
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, len(arr), _CHUNK):
        chunk = arr[start : start + _CHUNK]
        if arr.dtype.kind == "f":
            if not np.isfinite(chunk).all():
                raise DataError(f"Masks in '{name}' hold NaN or inf; expected integer labels.")
            if not np.array_equal(chunk, np.round(chunk)):
                raise DataError(f"Masks in '{name}' hold non-integral values; expected integer labels.")
        if arr.dtype != np.uint8:
            bad = (chunk < 0) | (chunk > 255)
            if bad.any():
                raise _outside([int(v) for v in np.unique(chunk[bad])[:8]], name, task)
        part = out[start : start + len(chunk)]
        part[...] = chunk
        counts += np.bincount(part.ravel(), minlength=256)
    if task is not None:
        extra = sorted(set(np.flatnonzero(counts).tolist()) - set(task.valid_labels))
        if extra:
            raise _outside(extra[:8], name, task)
    return out, counts


def _read_groups(arrays: dict[str, np.ndarray], n: int) -> np.ndarray | None:
    if "groups" not in arrays:
        return None
    groups = arrays["groups"]
    if groups.shape != (n,) or groups.dtype.kind not in "ui":
        raise DataError(
            f"'groups' has shape {groups.shape} and dtype {groups.dtype}; expected ({n},) integer source ids."
        )
    return groups.astype(np.int64)


def from_arrays(arrays: dict[str, np.ndarray], path: str, fingerprint: str, limit: int | None = None,
                task: Task | None = None) -> SegData:
    """Validate raw arrays (as read by :func:`read_arrays`) against ``task`` and build a :class:`SegData`.

    Without a task, it is inferred from the whole file (:func:`ablate.data.infer.infer_task`), so
    a ``limit`` never changes it.

    Raises:
        DataError: a key is missing, or an array has the wrong shape, dtype or values (for the task).
    """
    parts = split_layout(arrays, path, task)
    groups = _read_groups(arrays, len(parts.images))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer or None; got {limit!r}.")
    rows = slice(None, limit)
    if task is None:
        masks, counts = _to_masks(parts.masks, parts.names[1], None)
        task = infer_task(*parts.shape, np.flatnonzero(counts).tolist(), course=parts.course,
                          names=class_names(arrays, path))
        masks = masks[rows].copy() if limit is not None and limit < len(masks) else masks
    else:
        masks = _to_masks(parts.masks[rows], parts.names[1], task)[0]
    image_rows = parts.images[rows]
    images = scale_images(image_rows, _check_images(image_rows, parts.names[0]))
    test_images = None
    if parts.test is not None:
        test_images = scale_images(parts.test, _check_images(parts.test, parts.names[2]))
    return SegData(images, masks, test_images, fingerprint, str(path), None if groups is None else groups[rows], task)


def load_npz(path: str | os.PathLike[str], limit: int | None = None, task: Task | None = None) -> SegData:
    """Load, validate and normalise a segmentation ``.npz`` (either layout, see the module docstring).

    Args:
        path: the ``.npz`` file.
        limit: keep only the first ``limit`` training pairs (quick runs); None keeps all.
        task: the task to check the data against; None infers it from the file.

    Returns:
        The validated :class:`SegData`, with its task.

    Raises:
        DataError: the file is missing, unreadable, in neither layout, or does not fit the task.
    """
    arrays = read_arrays(path)
    return from_arrays(arrays, str(path), cached_fingerprint(path), limit, task)


def split_indices(
    n: int, val_fraction: float = 0.2, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into sorted train and validation indices, deterministically.

    Args:
        n: number of pairs.
        val_fraction: share of pairs for validation, in (0, 1). At least one pair goes to
            validation when ``n >= 2``.
        seed: seed of the numpy Generator that shuffles the pairs (or groups).
        groups: optional (n,) ids; pairs with one id go to one side together (e.g. the two
            halves of one source image), so validation never sees a half of a training image.

    Returns:
        (train_idx, val_idx), sorted int64 arrays covering every index exactly once.

    Example:
        >>> train, val = split_indices(10, 0.2, seed=0)
        >>> len(train), len(val)
        (8, 2)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"split_indices needs n >= 1 pairs; got {n!r}.")
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be in (0, 1); got {val_fraction!r}.")
    rng = np.random.default_rng(seed)
    if n == 1:
        return np.array([0], dtype=np.int64), np.array([], dtype=np.int64)
    target = min(n - 1, max(1, round(n * float(val_fraction))))
    if groups is None:
        order = rng.permutation(n)
        return np.sort(order[target:]).astype(np.int64), np.sort(order[:target]).astype(np.int64)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise DataError(f"groups has shape {groups.shape}; expected ({n},), one id per pair.")
    ids, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(ids) < 2:
        raise DataError("All pairs share one group, so no group-respecting split exists; pass groups=None.")
    order = rng.permutation(len(ids))
    taken = np.cumsum(counts[order])
    n_val_groups = int(np.searchsorted(taken, target)) + 1
    val_groups = order[: min(n_val_groups, len(ids) - 1)]
    is_val = np.isin(inverse, val_groups)
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)
