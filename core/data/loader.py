"""Load and validate the course's Mars terrain ``.npz`` and split it into train/validation.

The course format holds ``training_set`` (N, 2, 64, 128): ``[:, 0]`` grayscale images (0-255,
or 0-1 floats) and ``[:, 1]`` masks (0 background, 1 soil, 2 bedrock, 3 sand, 4 big rock),
and optionally ``test_set`` (M, 64, 128) images and ``groups`` (N,) source ids. Every problem
is reported as a one-line :class:`~ablate.errors.DataError` when the file is loaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ablate.data import npz
from ablate.errors import DataError

HEIGHT, WIDTH = 64, 128  # the course's image size
NUM_CLASSES = 5  # 0 background/unlabelled, 1 soil, 2 bedrock, 3 sand, 4 big rock
CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big rock")
_CHUNK = 1024  # rows validated at a time: bounds memory on float64 files (~1 GB for 7200 pairs)


@dataclass(frozen=True)
class MarsData:
    """A validated Mars terrain dataset.

    Attributes:
        images: (N, 64, 128, 1) float32 in [0, 1].
        masks: (N, 64, 128) uint8 labels 0-4.
        test_images: (M, 64, 128, 1) float32 in [0, 1], or None when the file has no test set.
        fingerprint: first 16 hex chars of the file's sha256 (identifies the data in MLflow).
        path: the file it was loaded from.
        groups: (N,) int64 source-image ids (pairs of one group stay in one split), or None.

    Example:
        >>> data = load_npz("../shared/data/mars_ai4mars_64x128.npz", limit=100)
        >>> data.images.shape, data.masks.dtype
        ((100, 64, 128, 1), dtype('uint8'))
    """

    images: np.ndarray
    masks: np.ndarray
    test_images: np.ndarray | None
    fingerprint: str
    path: str
    groups: np.ndarray | None = None


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
    real = os.path.realpath(path)
    st = os.stat(real)
    return _fingerprint_of(real, st.st_ino, st.st_size, st.st_mtime_ns)


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


COURSE_KEYS = ("training_set", "test_set", "groups")  # the arrays a course file may hold; others are not read


def read_arrays(path: str | os.PathLike[str], keys: Sequence[str] | None = COURSE_KEYS) -> dict[str, np.ndarray]:
    """Read the course arrays (or ``keys``; None reads all) of an ``.npz``; ``training_set`` must be there.

    Only the named arrays are decompressed, each after its header passed the checks of
    :mod:`ablate.data.npz` (no object arrays, a size cap, a zip entry matching its header), so an
    unused or oversized member costs nothing.

    Args:
        path: the ``.npz`` file.
        keys: the arrays to read if present.

    Returns:
        name -> array, in the file's dtypes.

    Raises:
        DataError: the file is missing, not an ``.npz``, truncated/corrupt, has no ``training_set``,
            or holds an object or oversized array.
    """
    return npz.read_arrays(path, keys, required=("training_set",), hint="expected the course .npz layout")


def check_header(path: str | os.PathLike[str]) -> None:
    """Check an ``.npz`` against the course layout from its zip directory and array headers alone.

    What a campaign runs before it queues anything: no array is decompressed (only each course
    array's ``.npy`` header, see :mod:`ablate.data.npz`), so a missing, truncated or wrongly
    shaped file is one clear error at once rather than a failure in every trial. Values
    (labels 0-4, finite pixels) and the bytes past each header are checked when
    :func:`load_npz` reads the file.

    Raises:
        DataError: the file is missing, not an ``.npz``, truncated, or its course arrays have the
            wrong names, shapes or dtypes.
    """
    found = npz.array_keys(path)
    hint = "expected the course .npz layout"
    members = {key: npz.open_member(path, key, hint) for key in COURSE_KEYS if key in found or key == "training_set"}
    # Zero-byte views with each header's shape and dtype, so that the loader's own checks (and messages) apply.
    views = {key: np.broadcast_to(np.zeros((), m.dtype), m.shape) for key, m in members.items()}
    for key, layout in (("training_set", ("N", 2, HEIGHT, WIDTH)), ("test_set", ("M", HEIGHT, WIDTH))):
        if key in views:
            _check_shape(views[key], key, layout)
            if views[key].dtype.kind not in "uif":
                raise DataError(f"'{key}' has dtype {views[key].dtype}; expected uint8 or float images.")
    _read_groups(views, len(views["training_set"]))


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
        arr: (N, 64, 128) images.
        hi: the array's maximum when already known.
    """
    if hi is None:
        hi = float(arr.max()) if arr.size else 0.0
    out = arr.astype(np.float32)
    if arr.dtype.kind in "ui" or hi > 1.0:
        out /= np.float32(255.0)
    return out[..., None]


def _to_masks(arr: np.ndarray) -> np.ndarray:
    """Validate mask labels chunk by chunk and return them as uint8."""
    if arr.dtype.kind not in "uif":
        raise DataError(
            f"Masks in 'training_set' have dtype {arr.dtype}; expected integer labels 0-4 (uint8 or float)."
        )
    out = np.empty(arr.shape, dtype=np.uint8)
    for start in range(0, len(arr), _CHUNK):
        chunk = arr[start : start + _CHUNK]
        if arr.dtype.kind == "f":
            if not np.isfinite(chunk).all():
                raise DataError("Masks in 'training_set' hold NaN or inf; expected integer labels 0-4.")
            if not np.array_equal(chunk, np.round(chunk)):
                raise DataError("Masks in 'training_set' hold non-integral values; expected integer labels 0-4.")
        bad = (chunk < 0) | (chunk >= NUM_CLASSES)
        if bad.any():
            values = [int(v) for v in np.unique(chunk[bad])[:8]]
            raise DataError(
                f"Masks hold labels {values} outside 0-4; expected 0 background, 1 soil, 2 bedrock, 3 sand, 4 big rock."
            )
        out[start : start + len(chunk)] = chunk
    return out


def _check_shape(arr: np.ndarray, name: str, expected: tuple[int | str, ...]) -> None:
    spec = tuple(d for d in expected if isinstance(d, int))
    ok = arr.ndim == len(expected) and arr.shape[1:] == spec
    if not ok:
        shown = "(" + ", ".join(str(d) for d in expected) + ")"
        raise DataError(f"'{name}' has shape {arr.shape}; expected {shown}.")
    if arr.shape[0] == 0:
        raise DataError(f"'{name}' is empty (shape {arr.shape}); expected at least one entry.")


def _read_groups(arrays: dict[str, np.ndarray], n: int) -> np.ndarray | None:
    if "groups" not in arrays:
        return None
    groups = arrays["groups"]
    if groups.shape != (n,) or groups.dtype.kind not in "ui":
        raise DataError(
            f"'groups' has shape {groups.shape} and dtype {groups.dtype}; expected ({n},) integer source ids."
        )
    return groups.astype(np.int64)


def from_arrays(arrays: dict[str, np.ndarray], path: str, fingerprint: str, limit: int | None = None) -> MarsData:
    """Validate raw arrays (as read by :func:`read_arrays`) and build a :class:`MarsData`.

    Raises:
        DataError: a key is missing or an array has the wrong shape, dtype or values.
    """
    if "training_set" not in arrays:
        raise DataError(
            f"'{path}' has no 'training_set' array (found keys: {sorted(arrays)}); expected the course .npz layout."
        )
    train = arrays["training_set"]
    _check_shape(train, "training_set", ("N", 2, HEIGHT, WIDTH))
    groups = _read_groups(arrays, len(train))
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DataError(f"limit must be a positive integer or None; got {limit!r}.")
        train = train[:limit]
        groups = None if groups is None else groups[:limit]
    images = scale_images(train[:, 0], _check_images(train[:, 0], "training_set images"))
    test = arrays.get("test_set")
    test_images = None
    if test is not None:
        _check_shape(test, "test_set", ("M", HEIGHT, WIDTH))
        test_images = scale_images(test, _check_images(test, "test_set"))
    return MarsData(images, _to_masks(train[:, 1]), test_images, fingerprint, str(path), groups)


def load_npz(path: str | os.PathLike[str], limit: int | None = None) -> MarsData:
    """Load, validate and normalise a course-format ``.npz``.

    Args:
        path: the ``.npz`` file.
        limit: keep only the first ``limit`` training pairs (quick runs); None keeps all.

    Returns:
        The validated :class:`MarsData`.

    Raises:
        DataError: the file is missing, unreadable or not in the expected layout.
    """
    arrays = read_arrays(path)
    return from_arrays(arrays, str(path), cached_fingerprint(path), limit)


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
