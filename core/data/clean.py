"""Find and remove outlier pairs: one intricate mask repeated across many unrelated images.

Crowd-sourced terrain labels legitimately repeat simple masks: all unlabelled, all soil, or one
class with a straight strip or frame left unlabelled. What cannot be terrain is an *intricate*
mask (two or more terrain classes, or a label boundary longer than the image's perimeter)
repeated pixel for pixel on several *unrelated* images. Masks are grouped by the sha1 of their
bytes; a group is an outlier group when its mask is intricate and its images are at least
``min_group`` distinct pictures (not near-duplicates of one another).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ablate.data.io import atomic_path, check_npz_suffix, refuse_same_file
from ablate.data.loader import file_fingerprint, from_arrays, read_arrays, scale_images
from ablate.errors import DataError

NEAR_DUPLICATE_TOL = 0.02  # mean |difference| (0-1 scale) below which two images count as one picture
_POOL = 4  # images are compared after 4x4 average pooling, which ignores sensor noise


@dataclass(frozen=True)
class CleanReport:
    """What :func:`find_outliers` found.

    Attributes:
        removed: sorted indices of the pairs judged outliers.
        groups: one dict per group of >= ``min_group`` identical masks, largest first, with
            ``hash``, ``size``, ``indices``, ``classes``, ``terrain_classes``, ``boundary``,
            ``distinct_images``, ``outlier`` and a human-readable ``reason``.

    Example:
        >>> report = find_outliers(data.masks, ignore_label=data.task.ignore_label, images=data.images)
        >>> report.removed[:3]
        [4, 71, 103]
    """

    removed: list[int] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def boundary_length(mask: np.ndarray) -> int:
    """Number of 4-neighbour pixel pairs whose labels differ."""
    return int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())


def _pooled(images: np.ndarray) -> np.ndarray:
    """(k, H, W[, C]) images -> (k, H/4 * W/4) float32 in [0, 1] after average pooling (and over channels)."""
    imgs = scale_images(images)
    imgs = imgs[..., 0] if imgs.shape[-1] == 1 else imgs.mean(axis=-1)
    k, h, w = imgs.shape
    hp, wp = h // _POOL, w // _POOL
    pooled = imgs[:, : hp * _POOL, : wp * _POOL].reshape(k, hp, _POOL, wp, _POOL).mean(axis=(2, 4))
    return pooled.reshape(k, -1)


def count_distinct(images: np.ndarray, tol: float = NEAR_DUPLICATE_TOL) -> int:
    """Count pictures among ``images`` after merging near-duplicates (greedy clustering)."""
    reps: list[np.ndarray] = []
    for vec in _pooled(images):
        if not any(float(np.abs(vec - r).mean()) < tol for r in reps):
            reps.append(vec)
    return len(reps)


def _judge(mask: np.ndarray, distinct: int, min_group: int, ignore_label: int | None) -> tuple[bool, str]:
    """Decide whether a group of identical masks is an outlier group; return (outlier, reason)."""
    labels = np.unique(mask)
    terrain = int((labels != ignore_label).sum())  # labelled classes: every label but the task's ignore label
    boundary = boundary_length(mask)
    perimeter = 2 * (mask.shape[0] + mask.shape[1])
    if len(labels) == 1:
        return False, f"single label {int(labels[0])}: legitimate duplicate"
    if terrain < 2 and boundary <= perimeter:
        return False, f"simple mask (1 terrain class, boundary {boundary} <= {perimeter} px): legitimate duplicate"
    if distinct < min_group:
        return False, f"images are near-duplicates ({distinct} distinct): legitimate duplicate"
    return True, (
        f"intricate mask ({terrain} terrain classes, boundary {boundary} px) repeated on "
        f"{distinct} unrelated images: outlier"
    )


def find_outliers(
    masks: np.ndarray, min_group: int = 3, *, ignore_label: int | None, images: np.ndarray | None = None,
    tol: float = NEAR_DUPLICATE_TOL,
) -> CleanReport:
    """Find training pairs whose mask is one intricate mask shared by many unrelated images.

    Args:
        masks: (N, H, W) integer labels.
        min_group: smallest number of identical masks (and of distinct images) that counts.
        ignore_label: the task's unlabelled value (``task.ignore_label``: 0 for Mars, often 255
            elsewhere; None when every label is a class). It does not count as a class when a
            mask is judged simple or intricate. Required: no task's value is a safe default.
        images: optional (N, H, W[, C]) images; without them every image is taken as distinct.
        tol: near-duplicate threshold on the mean absolute difference of pooled [0, 1] images.

    Returns:
        A :class:`CleanReport` listing the removed indices and every group of >= ``min_group``
        identical masks with the reason it was kept or removed.

    Raises:
        DataError: the arrays have the wrong shape or ``min_group < 2``.
    """
    if masks.ndim != 3:
        raise DataError(f"masks has shape {masks.shape}; expected (N, H, W).")
    if images is not None and images.shape[:3] != masks.shape:
        raise DataError(f"images has shape {images.shape}; expected {masks.shape} (+ optional channel) to match masks.")
    if isinstance(min_group, bool) or not isinstance(min_group, int) or min_group < 2:
        raise DataError(f"min_group must be an integer >= 2; got {min_group!r}.")
    by_hash: dict[str, list[int]] = {}
    for i, mask in enumerate(masks):
        by_hash.setdefault(hashlib.sha1(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()).hexdigest(), []).append(i)
    groups, removed = [], []
    for digest, idx in sorted(by_hash.items(), key=lambda kv: (-len(kv[1]), kv[1][0])):
        if len(idx) < min_group:
            continue
        distinct = len(idx) if images is None else count_distinct(images[idx], tol)
        outlier, reason = _judge(masks[idx[0]], distinct, min_group, ignore_label)
        labels = np.unique(masks[idx[0]])
        groups.append(
            {
                "hash": digest,
                "size": len(idx),
                "indices": idx,
                "classes": [int(c) for c in labels],
                "terrain_classes": int((labels != ignore_label).sum()),
                "boundary": boundary_length(masks[idx[0]]),
                "distinct_images": distinct,
                "outlier": outlier,
                "reason": reason,
            }
        )
        if outlier:
            removed.extend(idx)
    return CleanReport(removed=sorted(removed), groups=groups)


def clean_npz(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    report_path: str | os.PathLike[str],
    min_group: int = 3,
) -> CleanReport:
    """Remove outlier pairs from an ``.npz`` (either layout); write the cleaned file and a JSON report.

    ``OUT.npz`` keeps the input's dtypes: ``training_set`` or ``images``/``masks`` (and any per-pair
    array such as ``groups``) without the removed pairs, the test images and other arrays unchanged.
    ``REPORT.json`` holds ``removed``, ``groups``, ``kept``, ``input`` and ``fingerprint``.
    Both files are written atomically and only after both are complete.

    Raises:
        DataError: the input is invalid, or an output path names the input or each other.
    """
    out = check_npz_suffix(out_path)
    refuse_same_file(out, in_path)
    refuse_same_file(report_path, in_path)
    if os.path.abspath(out) == os.path.abspath(report_path):
        raise DataError(f"The cleaned file and the report both point to '{out}'; give two different paths.")
    arrays = read_arrays(in_path, keys=None)  # every array: the cleaned file keeps the others unchanged
    fingerprint = file_fingerprint(in_path)
    data = from_arrays(arrays, str(in_path), fingerprint)
    report = find_outliers(data.masks, min_group, images=data.images, ignore_label=data.task.ignore_label)
    n = len(data.masks)
    keep = np.setdiff1d(np.arange(n), np.asarray(report.removed, dtype=np.int64))
    per_pair = {k for k, v in arrays.items() if k not in ("test_set", "test_images") and v.ndim and v.shape[0] == n}
    cleaned = {k: (v[keep] if k in per_pair else v) for k, v in arrays.items()}
    summary = {"input": str(in_path), "fingerprint": fingerprint, "kept": int(len(keep)), **report.to_dict()}
    with atomic_path(out) as tmp_npz, atomic_path(report_path) as tmp_json:
        with open(tmp_npz, "wb") as fh:
            np.savez_compressed(fh, **cleaned)
        tmp_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return report
