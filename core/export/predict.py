"""``ablate predict``: masks for every image of an ``.npz``, streamed in batches.

Images are read in batches straight from the ``.npz`` (see :mod:`~ablate.export.npzstream`),
so memory stays flat for 10,000+ images: the masks go to ``OUT.npz`` (``masks`` (N, H, W)
uint8, the model's task's size), optionally colour overlays in the task's palette and, for the
Mars course's task only, its submission CSV (``id`` then 8,192 pixel labels, row-major), each
written atomically (complete or not at all).

The ``.npz`` is in either layout: the course's (``test_set`` (N, H, W) and ``training_set``
(N, 2, H, W), grayscale) or images and masks (``test_images`` and ``images``, (N, H, W[, C])).

Example:
    >>> predictor = load_predictor("exports/skip-types")
    >>> predict_file(predictor, "data.npz", "masks.npz", submission="sub.csv")
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.data.io import atomic_path, check_npz_suffix, refuse_same_file
from ablate.data.npz import array_keys
from ablate.errors import AblateError, DataError
from ablate.export.loading import RUN_ID, Predictor, load_predictor
from ablate.export.npzstream import ArrayWriter, Member, iter_rows, open_member
from ablate.task import MARS, Task

__all__ = ["RUN_ID", "PredictResult", "Predictor", "check_request", "load_predictor", "predict_file"]

# --split -> the image arrays it reads, first found wins: the course layout, then images/masks.
SPLITS = {"test": ("test_set", "test_images"), "train": ("training_set", "images")}
OVERLAY_ALPHA = 0.5  # mask colour over the image


@dataclass(frozen=True)
class PredictResult:
    """What a prediction wrote."""

    images: int
    out: Path
    submission: Path | None
    png_dir: Path | None
    seconds: float


# --- input ---------------------------------------------------------------------------------

def _split_key(data: str | Path, split: str) -> str:
    """The first of the split's array names the file holds (the first name if it holds none: its error)."""
    if split not in SPLITS:
        raise AblateError(f"--split must be one of {', '.join(SPLITS)}; got '{split}'.")
    keys = set(array_keys(data)) if Path(data).is_file() else set()
    return next((k for k in SPLITS[split] if k in keys), SPLITS[split][0])


def expected_layout(key: str, task: Task | None) -> str:
    """The shapes ``key`` may have for ``task`` (None: any size), for messages."""
    h, w = ("H", "W") if task is None else (task.height, task.width)
    if key == "training_set":
        return f"(N, 2, {h}, {w}) grayscale image/mask pairs"
    if task is None:
        return f"(N, {h}, {w}), (N, {h}, {w}, 1) or (N, {h}, {w}, 3) images"
    if task.channels == 1:
        return f"(N, {h}, {w}) or (N, {h}, {w}, 1) grayscale images"
    return f"(N, {h}, {w}, 3) RGB images"


def _layout_ok(key: str, s: tuple[int, ...], task: Task | None) -> bool:
    if key == "training_set":
        return len(s) == 4 and s[1] == 2 and (task is None or (task.channels == 1 and s[2:] == (task.height,
                                                                                                  task.width)))
    if task is None:
        return len(s) == 3 or (len(s) == 4 and s[3] in (1, 3))
    size = s[1:3] == (task.height, task.width)
    if task.channels == 1:
        return size and (len(s) == 3 or (len(s) == 4 and s[3] == 1))
    return size and len(s) == 4 and s[3] == 3


def open_images(data: str | Path, split: str, task: Task | None = None) -> Member:
    """The split's image array, checked for shape (against ``task``'s size and channels; None: any
    segmentation layout) and dtype (values are checked while reading)."""
    names = SPLITS.get(split, ())
    member = open_member(data, _split_key(data, split),
                         hint=f"expected {' or '.join(repr(k) for k in names)}; use --split to pick another")
    s = member.shape
    if not _layout_ok(member.key, s, task):
        what = "" if task is None else f" for a model of the task {task.height}x{task.width}x{task.channels}"
        raise DataError(f"'{member.key}' in '{member.path}' has shape {s}; expected "
                        f"{expected_layout(member.key, task)}{what}.")
    if member.dtype.kind not in "uif" or member.dtype == np.bool_:
        raise DataError(f"'{member.key}' has dtype {member.dtype}; expected uint8 or float images.")
    if s[0] == 0:
        raise DataError(f"'{member.key}' in '{member.path}' is empty; expected at least one image.")
    if member.fortran:  # checked here, before any output exists, rather than when the rows are read
        raise DataError(f"'{member.key}' in '{member.path}' is stored in Fortran order; re-save it with "
                        f"np.savez(path, {member.key}=np.ascontiguousarray(array)).")
    return member


def batches(member: Member, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, images (n, H, W, C)) in the file's dtype."""
    for start, rows in iter_rows(member, batch):
        images = rows[:, 0] if member.key == "training_set" else rows
        yield start, images[..., None] if images.ndim == 3 else images


def scale_divisor(member: Member, batch: int) -> float:
    """255 or 1, decided over the whole array as the loader does; checks every value on the way."""
    if member.dtype == np.uint8:
        return 255.0
    hi = -np.inf
    for start, images in batches(member, batch):
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            bad = start + int(np.argmin(np.isfinite(images).reshape(len(images), -1).all(axis=1)))
            raise DataError(f"'{member.key}' holds NaN or inf values (first at image {bad}); expected finite values "
                            "0-255 or 0-1.")
        lo, top = float(images.min()), float(images.max())
        if lo < 0 or top > 255:
            raise DataError(f"'{member.key}' values span [{lo:g}, {top:g}] near image {start}; expected 0-255 "
                            "(or 0-1 floats).")
        hi = max(hi, top)
    return 255.0 if member.dtype.kind in "ui" or hi > 1.0 else 1.0


# --- outputs -------------------------------------------------------------------------------

def check_submission(task: Task) -> None:
    """The submission CSV is the Mars course's format: refused for any other task."""
    if not task.is_mars:
        raise AblateError(f"--submission writes the Mars course's submission CSV (64x128 grayscale, classes "
                          f"{', '.join(MARS.classes)}); this model's task is {task.height}x{task.width}x"
                          f"{task.channels} with classes {', '.join(task.classes)}: drop --submission and use the "
                          "masks in --out.")


def csv_header() -> bytes:
    return ("id," + ",".join(str(i) for i in range(MARS.height * MARS.width)) + "\n").encode()


def csv_rows(start: int, masks: np.ndarray) -> bytes:
    """Rows ``id,l0,l1,...,l8191`` (labels are single digits, so bytes are built directly)."""
    n, pixels = len(masks), MARS.height * MARS.width
    body = np.empty((n, 2 * pixels + 1), np.uint8)
    body[:, 0 : 2 * pixels : 2] = ord(",")
    body[:, 1 : 2 * pixels : 2] = masks.reshape(n, pixels) + ord("0")
    body[:, -1] = ord("\n")
    return b"".join(str(start + i).encode() + body[i].tobytes() for i in range(n))


def overlay(image: np.ndarray, mask: np.ndarray, task: Task = MARS) -> np.ndarray:
    """RGB (H, W, 3): the image (grayscale (H, W[, 1]) or RGB (H, W, 3), in [0, 1]) with each pixel
    tinted by its predicted class's colour; pixels predicted as the ignore label's class (Mars:
    background) are left untinted."""
    pixels = np.clip(np.asarray(image, np.float32) * 255.0, 0, 255)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    base = np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels
    colour = np.asarray(task.palette, np.float32)[mask]
    tinted = mask != task.ignore_label if task.ignore_is_class else np.ones(mask.shape, bool)
    tint = np.where(tinted[..., None], (1 - OVERLAY_ALPHA) * base + OVERLAY_ALPHA * colour, base)
    return tint.round().astype(np.uint8)


def _write_pngs(folder: Path, start: int, images: np.ndarray, masks: np.ndarray, task: Task) -> None:
    from PIL import Image

    for i, (img, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(overlay(img, mask, task)).save(folder / f"{start + i:06d}.png")


@contextlib.contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """A hidden folder renamed onto ``dest`` (replacing it) when the block succeeds."""
    if dest.exists() and not dest.is_dir():
        raise AblateError(f"--png '{dest}' is a file; expected a folder for the overlays.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield stage
        if dest.exists():
            shutil.rmtree(dest)
        stage.rename(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --- the loop ---------------------------------------------------------------------------------

def check_request(data: str | Path, out: str | Path, split: str, batch_size: int, task: Task | None = None,
                  submission: str | Path | None = None) -> Member:
    """Checks the arguments and the input's layout (cheap: call it before loading a model, with
    ``task`` None, and again once the model's task is known)."""
    if batch_size < 1:
        raise AblateError(f"--batch-size must be >= 1; got {batch_size}.")
    refuse_same_file(check_npz_suffix(out), data)
    member = open_images(data, split, task)
    if submission is not None and task is not None:
        check_submission(task)
    return member


def predict_file(predictor: Predictor, data: str | Path, out: str | Path, split: str = "test",
                 submission: str | Path | None = None, png: str | Path | None = None,
                 batch_size: int = 64, task: Task | None = None) -> PredictResult:
    """Predicts every image of ``data``'s split; writes ``out`` (and the CSV and PNGs if asked).

    ``task``: the model's; default ``predictor.task`` (see :func:`load_predictor`), else the Mars task.
    """
    out = Path(out)
    task = task or getattr(predictor, "task", None) or MARS
    member = check_request(data, out, split, batch_size, task, submission)
    divisor = scale_divisor(member, batch_size)
    n, (h, w) = member.shape[0], (task.height, task.width)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        zf = stack.enter_context(zipfile.ZipFile(stack.enter_context(atomic_path(out)), "w", zipfile.ZIP_DEFLATED))
        writer = stack.enter_context(ArrayWriter(zf, "masks", (n, h, w), np.dtype(np.uint8)))
        csv = stack.enter_context(open(stack.enter_context(atomic_path(submission)), "wb")) if submission else None
        pngs = stack.enter_context(staged_folder(Path(png))) if png else None
        if csv is not None:
            csv.write(csv_header())
        for start, masks, images in _predicted(predictor, member, divisor, batch_size, task):
            writer.write(masks)
            if csv is not None:
                csv.write(csv_rows(start, masks))
            if pngs is not None:
                _write_pngs(pngs, start, images, masks, task)
    return PredictResult(n, out, Path(submission) if submission else None, Path(png) if png else None,
                         time.perf_counter() - t0)


def _predicted(predictor: Predictor, member: Member, divisor: float, batch_size: int, task: Task = MARS
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    from tqdm import tqdm

    with tqdm(total=member.shape[0], unit="img", desc="predict", file=sys.stderr, disable=None) as bar:
        for start, raw in batches(member, batch_size):
            images = raw.astype(np.float32) / np.float32(divisor)
            masks = np.asarray(predictor(images))
            if masks.shape != raw.shape[:3] or masks.min() < 0 or masks.max() >= task.num_classes:
                raise AblateError(f"The model returned masks of shape {masks.shape} with labels "
                                  f"{masks.min()}-{masks.max()}; expected {raw.shape[:3]} labels 0-"
                                  f"{task.num_classes - 1}. Is it a model exported by `ablate export`?")
            yield start, masks.astype(np.uint8), images
            bar.update(len(raw))
