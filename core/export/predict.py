"""``ablate predict``: masks for every image of an ``.npz``, streamed in batches.

Images are read in batches straight from the ``.npz`` (see :mod:`~ablate.export.npzstream`),
so memory stays flat for 10,000+ images: the masks go to ``OUT.npz`` (``masks`` (N, 64, 128)
uint8), optionally the course submission CSV (``id`` then 8,192 pixel labels, row-major) and
colour overlays, each written atomically (complete or not at all).

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
from ablate.data.loader import HEIGHT, WIDTH
from ablate.errors import AblateError, DataError
from ablate.export.loading import RUN_ID, Predictor, load_predictor
from ablate.export.npzstream import ArrayWriter, Member, iter_rows, open_member
from ablate.metrics import CLASS_COLOURS, NUM_CLASSES

__all__ = ["RUN_ID", "PredictResult", "Predictor", "check_request", "load_predictor", "predict_file"]

SPLITS = {"test": "test_set", "train": "training_set"}
OVERLAY_ALPHA = 0.5  # mask colour over the grayscale image


@dataclass(frozen=True)
class PredictResult:
    """What a prediction wrote."""

    images: int
    out: Path
    submission: Path | None
    png_dir: Path | None
    seconds: float


# --- input ---------------------------------------------------------------------------------

def open_images(data: str | Path, split: str) -> Member:
    """The split's image array, checked for shape and dtype (values are checked while reading)."""
    if split not in SPLITS:
        raise AblateError(f"--split must be one of {', '.join(SPLITS)}; got '{split}'.")
    member = open_member(data, SPLITS[split], hint="use --split to pick another")
    s = member.shape
    ok = (len(s) == 4 and s[1:] == (2, HEIGHT, WIDTH)) if split == "train" else (
        (len(s) == 3 and s[1:] == (HEIGHT, WIDTH)) or (len(s) == 4 and s[1:] == (HEIGHT, WIDTH, 1)))
    expected = "(N, 2, 64, 128)" if split == "train" else "(N, 64, 128) or (N, 64, 128, 1)"
    if not ok:
        raise DataError(f"'{member.key}' in '{member.path}' has shape {s}; expected {expected} grayscale images.")
    if member.dtype.kind not in "uif" or member.dtype == np.bool_:
        raise DataError(f"'{member.key}' has dtype {member.dtype}; expected uint8 or float images.")
    if s[0] == 0:
        raise DataError(f"'{member.key}' in '{member.path}' is empty; expected at least one image.")
    if member.fortran:  # checked here, before any output exists, rather than when the rows are read
        raise DataError(f"'{member.key}' in '{member.path}' is stored in Fortran order; re-save it with "
                        f"np.savez(path, {member.key}=np.ascontiguousarray(array)).")
    return member


def batches(member: Member, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, images (n, 64, 128)) in the file's dtype."""
    for start, rows in iter_rows(member, batch):
        yield start, rows[:, 0] if member.key == "training_set" else rows.reshape(len(rows), HEIGHT, WIDTH)


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

def csv_header() -> bytes:
    return ("id," + ",".join(str(i) for i in range(HEIGHT * WIDTH)) + "\n").encode()


def csv_rows(start: int, masks: np.ndarray) -> bytes:
    """Rows ``id,l0,l1,...,l8191`` (labels are single digits, so bytes are built directly)."""
    n, pixels = len(masks), HEIGHT * WIDTH
    body = np.empty((n, 2 * pixels + 1), np.uint8)
    body[:, 0 : 2 * pixels : 2] = ord(",")
    body[:, 1 : 2 * pixels : 2] = masks.reshape(n, pixels) + ord("0")
    body[:, -1] = ord("\n")
    return b"".join(str(start + i).encode() + body[i].tobytes() for i in range(n))


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB (64, 128, 3): the grayscale image with labelled pixels tinted by class colour."""
    grey = np.repeat(np.clip(image * 255.0, 0, 255)[..., None], 3, axis=-1)
    colour = np.asarray(CLASS_COLOURS, np.float32)[mask]
    tint = np.where((mask > 0)[..., None], (1 - OVERLAY_ALPHA) * grey + OVERLAY_ALPHA * colour, grey)
    return tint.round().astype(np.uint8)


def _write_pngs(folder: Path, start: int, images: np.ndarray, masks: np.ndarray) -> None:
    from PIL import Image

    for i, (img, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(overlay(img[..., 0], mask)).save(folder / f"{start + i:06d}.png")


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

def check_request(data: str | Path, out: str | Path, split: str, batch_size: int) -> Member:
    """Checks the arguments and the input's layout (cheap: call it before loading a model)."""
    if batch_size < 1:
        raise AblateError(f"--batch-size must be >= 1; got {batch_size}.")
    refuse_same_file(check_npz_suffix(out), data)
    return open_images(data, split)


def predict_file(predictor: Predictor, data: str | Path, out: str | Path, split: str = "test",
                 submission: str | Path | None = None, png: str | Path | None = None,
                 batch_size: int = 64) -> PredictResult:
    """Predicts every image of ``data``'s split; writes ``out`` (and the CSV and PNGs if asked)."""
    out = Path(out)
    member = check_request(data, out, split, batch_size)
    divisor = scale_divisor(member, batch_size)
    n = member.shape[0]
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        zf = stack.enter_context(zipfile.ZipFile(stack.enter_context(atomic_path(out)), "w", zipfile.ZIP_DEFLATED))
        writer = stack.enter_context(ArrayWriter(zf, "masks", (n, HEIGHT, WIDTH), np.dtype(np.uint8)))
        csv = stack.enter_context(open(stack.enter_context(atomic_path(submission)), "wb")) if submission else None
        pngs = stack.enter_context(staged_folder(Path(png))) if png else None
        if csv is not None:
            csv.write(csv_header())
        for start, masks, images in _predicted(predictor, member, divisor, batch_size):
            writer.write(masks)
            if csv is not None:
                csv.write(csv_rows(start, masks))
            if pngs is not None:
                _write_pngs(pngs, start, images, masks)
    return PredictResult(n, out, Path(submission) if submission else None, Path(png) if png else None,
                         time.perf_counter() - t0)


def _predicted(predictor: Predictor, member: Member, divisor: float, batch_size: int
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    from tqdm import tqdm

    with tqdm(total=member.shape[0], unit="img", desc="predict", file=sys.stderr, disable=None) as bar:
        for start, raw in batches(member, batch_size):
            images = (raw.astype(np.float32) / np.float32(divisor))[..., None]
            masks = np.asarray(predictor(images))
            if masks.shape != raw.shape or masks.min() < 0 or masks.max() >= NUM_CLASSES:
                raise AblateError(f"The model returned masks of shape {masks.shape} with labels "
                                  f"{masks.min()}-{masks.max()}; expected {raw.shape} labels 0-4. Is it a model "
                                  "exported by `ablate export`?")
            yield start, masks.astype(np.uint8), images
            bar.update(len(raw))
