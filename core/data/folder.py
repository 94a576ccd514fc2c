"""Bring your own data: a folder of images and a folder of masks -> an ``.npz`` (``ablate data import-folder``).

Image and mask files (PNG, JPEG, TIFF) are paired by file stem (``img/a.jpg`` with ``masks/a.png``).
Images are read as grey or RGB (``channels``; by default as the first image is), masks as
single-channel label images: a palette PNG gives its indices, a grey image its values, an RGB
mask goes through a label map (:mod:`ablate.data.labelmap`). With a size, images are resized
with area averaging when shrinking (bilinear when enlarging) and masks with nearest neighbour,
so no label is invented. The result is the separate layout (``images``, ``masks``, optional
``test_images``, and ``names``, the pairs' stems), written atomically: on any error nothing is.

Example:
    >>> result = import_folder("photos", "labels", "data/mine.npz", size=(96, 128))
    >>> print(result.task.describe())
    96x128x3, 4 classes (class_0, class_1, class_2, class_3), ignore label 255, scored: class_0, ...
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ablate.data.io import check_npz_suffix, save_npz_atomic
from ablate.data.labelmap import LabelMap, apply_label_map
from ablate.data.layout import CLASSES_KEY
from ablate.data.loader import from_arrays
from ablate.errors import DataError
from ablate.task import Task

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_SHOWN = 5  # unpaired file names named in a message
_PROGRESS_FROM = 200  # files: a progress bar on folders at least this long
_T = TypeVar("_T")


@dataclass(frozen=True)
class FolderImport:
    """What :func:`import_folder` wrote: the file, its counts and the task its data implies."""

    path: Path
    pairs: int
    test_images: int
    task: Task


def parse_size(text: str) -> tuple[int, int]:
    """``"64x128"`` -> (64, 128): height x width in pixels, each 4-8192."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or not all(4 <= int(v) <= 8192 for v in match.groups()):
        raise DataError(f"--size '{text}' is not HxW; expected height x width in pixels (each 4-8192), e.g. 64x128.")
    return int(match[1]), int(match[2])


def import_folder(images_dir: str | os.PathLike[str], masks_dir: str | os.PathLike[str],
                  out: str | os.PathLike[str], size: tuple[int, int] | None = None,
                  label_map: LabelMap | None = None, channels: int | None = None,
                  test_dir: str | os.PathLike[str] | None = None,
                  classes: list[str] | None = None) -> FolderImport:
    """Pairs, reads, resizes and checks every image and mask, then writes ``out`` atomically.

    Args:
        images_dir, masks_dir: the folders (their files, not sub-folders).
        out: the ``.npz`` to write.
        size: (height, width) to resize every pair to; None: every image must have one size.
        label_map: mask value or colour -> label; None reads mask values as labels.
        channels: 1 (grey) or 3 (RGB); None: as the first image is.
        test_dir: optional folder of unlabelled test images (same processing as the images).
        classes: the class names by label, stored in the file (``classes``), so that the task
            inferred from it names them; None: ``class_0`` ...

    Raises:
        DataError: a folder is missing or empty, files are unpaired, an image or mask is
            unreadable or of another size, a mask value is not mapped, ``classes`` leaves a
            label unnamed. Nothing is written then.
    """
    dest = check_npz_suffix(out)
    pairs = find_pairs(images_dir, masks_dir)
    channels = channels or _channels_of(pairs[0][0])
    reader = _Reader(size, channels, label_map or LabelMap())
    images, masks = [], []
    for image_path, mask_path in _progress(pairs, "pairs"):
        image, mask = reader.pair(image_path, mask_path)
        images.append(image)
        masks.append(mask)
    arrays = {"images": np.stack(images), "masks": np.stack(masks),
              "names": np.array([p[0].stem for p in pairs])}
    if classes is not None:
        arrays[CLASSES_KEY] = np.array(classes, dtype=str)
    if test_dir is not None:
        test_files = _files(Path(test_dir), "test images")
        arrays["test_images"] = np.stack([reader.image(p) for p in _progress(test_files, "test images")])
    task = from_arrays(arrays, str(dest), "", task=None).task  # the loader's checks, and the task it infers
    save_npz_atomic(dest, arrays)
    n_test = len(arrays["test_images"]) if "test_images" in arrays else 0
    return FolderImport(dest, len(pairs), n_test, task)


def find_pairs(images_dir: str | os.PathLike[str], masks_dir: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """(image, mask) files with one stem, sorted by stem; a DataError naming the unpaired files otherwise."""
    images = _by_stem(_files(Path(images_dir), "images"))
    masks = _by_stem(_files(Path(masks_dir), "masks"))
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images or lonely_masks:
        sides = ((lonely_images, "image(s)", "a mask"), (lonely_masks, "mask(s)", "an image"))
        parts = [f"{len(names)} {kind} without {other} ({_names(names)})" for names, kind, other in sides if names]
        raise DataError(f"Unpaired files in '{images_dir}' and '{masks_dir}': {'; '.join(parts)}; expected one mask "
                        "per image with the same file name stem.")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"The {what} folder '{folder}' does not exist or is not a folder.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(f"The {what} folder '{folder}' holds no PNG, JPEG or TIFF files.")
    return files


def _by_stem(files: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise DataError(f"'{found[path.stem].name}' and '{path.name}' in '{path.parent}' share the stem "
                            f"'{path.stem}'; expected one file per stem.")
        found[path.stem] = path
    return found


def _names(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f", ... {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _channels_of(path: Path) -> int:
    return _read(path, lambda img: 1 if img.mode in _GREY_MODES or (img.mode == "P" and _grey_palette(img)) else 3)


def _grey_palette(img: Any) -> bool:
    rgb = np.asarray(img.convert("RGB"))
    return bool((rgb == rgb[..., :1]).all())


def _progress(items: list[Path] | list[tuple[Path, Path]], what: str) -> Iterable:
    if len(items) < _PROGRESS_FROM:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=f"reading {what}", unit="file", file=sys.stderr)


class _Reader:
    """Reads one image or pair: converted, size-checked and resized as the import asks."""

    def __init__(self, size: tuple[int, int] | None, channels: int, label_map: LabelMap) -> None:
        self.size = size
        self.channels = channels
        self.label_map = label_map
        self.first: tuple[str, tuple[int, int]] | None = None  # without a size, every image must match this

    def image(self, path: Path) -> np.ndarray:
        return self._resized(self._image(path))

    def pair(self, image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        image = self._image(image_path)
        raw = _read(mask_path, _mask_values)
        if raw.shape[:2] != image.shape[:2]:
            raise DataError(f"Mask '{mask_path.name}' is {raw.shape[0]}x{raw.shape[1]} but its image "
                            f"'{image_path.name}' is {image.shape[0]}x{image.shape[1]}; expected the same size.")
        mask = apply_label_map(raw, self.label_map, mask_path.name)
        if self.size is not None and mask.shape != self.size:
            mask = np.asarray(Image.fromarray(mask).resize(self.size[::-1], Image.Resampling.NEAREST))
        return self._resized(image), mask

    def _image(self, path: Path) -> np.ndarray:
        arr = _read(path, lambda img: _as_uint8(img, self.channels))
        if self.size is None:
            if self.first is None:
                self.first = (path.name, arr.shape[:2])
            elif arr.shape[:2] != self.first[1]:
                name, (h, w) = self.first
                raise DataError(f"'{path.name}' is {arr.shape[0]}x{arr.shape[1]} but '{name}' is {h}x{w}; give "
                                "--size HxW to resize every image to one size.")
        return arr

    def _resized(self, arr: np.ndarray) -> np.ndarray:
        from PIL import Image

        if self.size is None or arr.shape[:2] == self.size:
            return arr
        h, w = self.size
        shrink = h <= arr.shape[0] and w <= arr.shape[1]  # area averaging when shrinking, bilinear otherwise
        method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(arr).resize((w, h), method))


def _read(path: Path, convert: Callable[[Any], _T]) -> _T:
    """``convert`` applied to the opened image; an unreadable file is a one-line DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return convert(img)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"'{path}' is not a readable image ({str(e).splitlines()[0][:120]}); expected a PNG, "
                        "JPEG or TIFF file.") from None


def _mask_values(img: Any) -> np.ndarray:
    """A mask's values: palette indices, grey values (16-bit kept) or (H, W, 3) colours."""
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("1", "LA"):
        return np.asarray(img.convert("L")).astype(np.int64) // (255 if img.mode == "1" else 1)
    return np.asarray(img.convert("RGB"))


def _as_uint8(img: Any, channels: int) -> np.ndarray:
    """A PIL image as (H, W) grey or (H, W, 3) RGB uint8; 16-bit and float images are scaled to 0-255."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or (arr.size and arr.max() > 255) else 255.0
        top = 1.0 if mode == "F" and arr.size and arr.max() <= 1.0 else top
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return grey if channels == 1 else np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(img.convert("L" if channels == 1 else "RGB"))
