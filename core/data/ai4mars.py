"""Convert the public AI4Mars layout into the course format (``ablate data import-ai4mars``).

AI4Mars ships grayscale NAVCAM images (``images/edr/*.JPG``) and label PNGs (``labels/train/*.png``,
``labels/test/.../*_merged.png``) with 0 soil, 1 bedrock, 2 sand, 3 big rock, 255 unlabelled.
Each labelled image is resized to 128x128 (image: box filter, label: nearest), cut into a top and
a bottom 64x128 half, and its labels are mapped to the course's 1-4 with 0 for unlabelled. A
``groups`` array gives the source image of each half, so both halves stay in one split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ablate.data.io import check_npz_suffix, save_npz_atomic
from ablate.errors import DataError

SIZE = 128  # sources are resized to SIZE x SIZE, then cut into two SIZE/2 x SIZE halves
_SUFFIXES = (".png", ".jpg", ".jpeg")
_LABEL_TAGS = ("_merged", "_labels", "_label", "_mask")  # label-file suffixes stripped for pairing
_LUT = np.full(256, 255, dtype=np.uint8)  # 255 marks a label value with no mapping
_LUT[[0, 1, 2, 3, 255]] = [1, 2, 3, 4, 0]  # AI4Mars soil, bedrock, sand, big rock, unlabelled


def _is_label(path: Path, root: Path) -> bool:
    """A file is a label when a folder on its path or its name says so."""
    parts = [p.lower() for p in path.relative_to(root).parts[:-1]]
    return any("label" in p for p in parts) or path.stem.lower().endswith(_LABEL_TAGS)


def _key(path: Path) -> str:
    stem = path.stem.lower()
    for tag in _LABEL_TAGS:
        if stem.endswith(tag):
            return stem[: -len(tag)]
    return stem


def find_pairs(src_dir: str | os.PathLike[str]) -> tuple[list[tuple[Path, Path]], int, int]:
    """Pair images with labels by file stem, searching ``src_dir`` recursively.

    Returns:
        (sorted (image, label) pairs, number of unpaired images, number of unpaired labels).

    Raises:
        DataError: the folder is missing, holds no pair, or two files claim one stem.
    """
    root = Path(src_dir)
    if not root.is_dir():
        raise DataError(f"AI4Mars folder '{root}' not found; expected a folder with images/ and labels/.")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in _SUFFIXES:
            continue
        table = labels if _is_label(path, root) else images
        key = _key(path)
        if key in table:
            raise DataError(f"Two files share the stem '{key}': '{table[key]}' and '{path}'; keep one of them.")
        table[key] = path
    pairs = [(images[k], labels[k]) for k in sorted(images.keys() & labels.keys())]
    if not pairs:
        raise DataError(
            f"No image/label pairs under '{root}' ({len(images)} images, {len(labels)} labels); expected "
            "label PNGs in a folder named like 'labels' whose stems match the image files."
        )
    return pairs, len(images) - len(pairs), len(labels) - len(pairs)


def _read_pair(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read, resize and remap one pair: (128, 128) uint8 image and mask."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as im:
            image = np.asarray(im.convert("L").resize((SIZE, SIZE), Image.Resampling.BOX))
        with Image.open(label_path) as lb:
            label = np.asarray(lb)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"Cannot read '{err.filename or image_path}': {err}; replace or remove the file.") from err
    if label.ndim == 3 and (label[..., :3] == label[..., :1]).all():
        label = label[..., 0]
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DataError(
            f"Label '{label_path}' has shape {label.shape} and dtype {label.dtype}; expected a grayscale 8-bit PNG."
        )
    mapped = _LUT[label]
    if (mapped == 255).any():
        bad = np.unique(label[mapped == 255])[:8].tolist()
        raise DataError(f"Label '{label_path}' holds values {bad}; expected AI4Mars labels 0-3 and 255 (unlabelled).")
    mask = np.asarray(Image.fromarray(mapped).resize((SIZE, SIZE), Image.Resampling.NEAREST))
    return image, mask


def import_ai4mars(src_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], seed: int = 0) -> dict[str, Any]:
    """Convert an AI4Mars folder into a course-format ``.npz`` with ``training_set`` and ``groups``.

    Args:
        src_dir: folder searched recursively for ``*.png``/``*.jpg`` images and labels; a file
            is a label when a folder on its path contains "label" (or its name ends in
            ``_merged``/``_label``/``_mask``); images and labels pair by stem.
        out_path: the ``.npz`` to write (atomically; nothing is written on error).
        seed: shuffles the order of the source images; the two halves of one image stay adjacent.

    Returns:
        ``{"out": path, "sources": n, "pairs": 2n, "unpaired_images": i, "unpaired_labels": j}``.

    Raises:
        DataError: no pairs, an unreadable file, or a label value outside {0, 1, 2, 3, 255}.

    Example:
        >>> import_ai4mars("ai4mars-dataset-merged-0.1/msl", "data/ai4mars.npz")
    """
    out = check_npz_suffix(out_path)
    pairs, lone_images, lone_labels = find_pairs(src_dir)
    order = np.random.default_rng(seed).permutation(len(pairs))
    training = np.empty((2 * len(pairs), 2, SIZE // 2, SIZE), dtype=np.uint8)
    for pos, i in enumerate(order):
        image, mask = _read_pair(*pairs[i])
        for half in range(2):
            rows = slice(half * SIZE // 2, (half + 1) * SIZE // 2)
            training[2 * pos + half] = image[rows], mask[rows]
    arrays = {
        "training_set": training,
        "groups": np.repeat(np.arange(len(pairs), dtype=np.int64), 2),
        "source_stems": np.repeat(np.array([pairs[i][0].stem for i in order]), 2),
    }
    save_npz_atomic(out, arrays)
    return {
        "out": str(out),
        "sources": len(pairs),
        "pairs": 2 * len(pairs),
        "unpaired_images": lone_images,
        "unpaired_labels": lone_labels,
    }
