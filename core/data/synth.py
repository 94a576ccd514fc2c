"""Procedural Mars terrain in the course format: the project's embedded default dataset.

Each pair is a 64x128 grayscale image and its mask (0 unlabelled, 1 soil, 2 bedrock, 3 sand,
4 big rock). Regions are irregular (thresholded smooth noise), each class has its own texture
(fractal soil, layered and cracked bedrock, rippled sand, shaded rocks with cast shadows) and the
class brightnesses overlap, so a model has to read texture and shape, not grey level. Like the
real data the classes are imbalanced, many masks hold one terrain class, labels leave holes, the
top of some images is sky, and ~1% of pairs carry one identical non-terrain mask (outliers for
the cleaner). Everything is vectorized numpy: 1000 pairs take about a second.

Example:
    >>> arrays, outliers = generate_with_truth(400, seed=0, n_test=50)
    >>> arrays["training_set"].shape, arrays["test_set"].shape
    ((400, 2, 64, 128), (50, 64, 128))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ablate.data.io import save_npz_atomic
from ablate.errors import DataError

H, W = 64, 128
_BATCH = 256  # images generated at once: keeps float32 temporaries near 150 MB
_OUTLIER_FRACTION = 0.01  # share of pairs given the shared outlier mask, as in the course data
_N_TERRAIN_P = (0.55, 0.33, 0.12)  # P(1, 2, 3 terrain classes in a mask); real data: .63/.27/.08
_CLASS_WEIGHTS = np.array([0.40, 0.50, 0.10])  # soil, bedrock, sand: sets the class imbalance
_P_SINGLE = 0.08  # fully labelled single-class masks (legitimate duplicates)
_P_EMPTY = 0.02  # fully unlabelled masks (legitimate duplicates)
_P_SKY = 0.45  # images whose top is sky (unlabelled)
_P_ROCKS = 0.13  # images with big rocks (real data: 7.8%, covering ~6% of such images)


def _interp(size: int, cells: int) -> np.ndarray:
    """(size, cells + 1) smoothstep interpolation weights from a coarse grid to ``size`` pixels."""
    t = (np.arange(size) + 0.5) / size * cells
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    f = f * f * (3 - 2 * f)
    m = np.zeros((size, cells + 1), dtype=np.float32)
    m[np.arange(size), i] = 1 - f
    m[np.arange(size), i + 1] = f
    return m


def _noise(rng: np.random.Generator, n: int, cy: int, cx: int, k: int = 1) -> np.ndarray:
    """Smooth value noise of shape (n, k, H, W), roughly unit variance, ``cy x cx`` cells."""
    grid = rng.standard_normal((n, k, cy + 1, cx + 1), dtype=np.float32)
    out = _interp(H, cy) @ grid @ _interp(W, cx).T
    return out * np.float32(1.0 / 0.75)  # interpolation shrinks the variance


def _fractal(rng: np.random.Generator, n: int, octaves: int, first: int = 2) -> np.ndarray:
    """Sum of ``octaves`` noise layers (cells doubling, amplitude halving): (n, H, W)."""
    out = np.zeros((n, H, W), dtype=np.float32)
    for o in range(octaves):
        cells = first * 2**o
        out += _noise(rng, n, cells, 2 * cells)[:, 0] * np.float32(0.5**o)
    return out / np.float32(1.15)


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Per-image uniform parameter shaped (n, 1, 1) for broadcasting over pixels."""
    return rng.uniform(lo, hi, n).astype(np.float32)[:, None, None]


def outlier_mask() -> np.ndarray:
    """The one non-terrain mask shared by the injected outliers: stripes and blocks, (64, 128) uint8."""
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[8:, :] = 1 + (np.arange(W) // 16) % 3  # vertical stripes of soil, bedrock, sand
    mask[24:40, 48:80] = 4  # a square "rock" in the middle
    mask[48:56, ::32] = 0  # regular holes
    return mask


def _layout(rng: np.random.Generator, n: int, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Terrain labels (1-3, irregular regions) and the sky mask, both (n, H, W)."""
    k = rng.choice(3, size=n, p=_N_TERRAIN_P) + 1
    k[rng.random(n) < _P_SINGLE] = 1
    keys = np.log(_CLASS_WEIGHTS) + rng.gumbel(size=(n, 3))  # Gumbel top-k picks k classes
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    active = rank < k[:, None]
    scores = _noise(rng, n, 2, 4, 3) + 0.5 * _noise(rng, n, 4, 8, 3)
    scores += np.where(active, 0.0, -1e4).astype(np.float32)[:, :, None, None]
    terrain = (np.argmax(scores, axis=1) + 1).astype(np.uint8)
    wave = (rng.standard_normal((n, 9)).astype(np.float32) @ _interp(W, 8).T)[:, None, :]
    horizon = _u(rng, 6, 34, n) + 2.5 * wave
    sky = (yy < horizon) & (rng.random(n) < _P_SKY)[:, None, None]
    return terrain, sky


def _textures(rng: np.random.Generator, n: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Soil, bedrock and sand textures around zero, stacked (3, n, H, W)."""
    soil = 0.07 * _fractal(rng, n, 5) + 0.03 * rng.standard_normal((n, H, W), dtype=np.float32)
    phi = _u(rng, -0.5, 0.5, n)
    across = -xx * np.sin(phi) + yy * np.cos(phi)
    warp = _noise(rng, n, 2, 4)[:, 0]
    bands = np.sin(2 * np.pi * across / _u(rng, 4, 12, n) + 1.5 * warp)
    crack = np.abs(_noise(rng, n, 4, 8)[:, 0] + 0.4 * _noise(rng, n, 8, 16)[:, 0])
    cracks = np.exp(-((crack / 0.07) ** 2))
    bedrock = 0.05 * bands - 0.14 * cracks + 0.04 * _fractal(rng, n, 3, first=4)
    theta = _u(rng, 0, np.pi, n)
    phase = 2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / _u(rng, 3, 9, n) + 0.8 * warp
    sand = 0.035 * (np.sin(phase) + 0.35 * np.sin(2 * phase)) + 0.02 * _noise(rng, n, 4, 8)[:, 0]
    return np.stack([soil, bedrock, sand])


def _rocks(rng: np.random.Generator, img: np.ndarray, ground: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Draw shaded big rocks with cast shadows into ``img`` in place; return the rock mask."""
    n = len(img)
    count = np.where(rng.random(n) < _P_ROCKS, rng.choice([1, 2, 3], size=n, p=[0.6, 0.3, 0.1]), 0)
    psi = _u(rng, 0, 2 * np.pi, n)
    lx, ly = np.cos(psi), np.sin(psi)
    rock = np.zeros(img.shape, dtype=bool)
    for slot in range(3):
        ry = _u(rng, 3.5, 11.0, n)
        rx = ry * _u(rng, 1.2, 2.2, n)
        cx, cy = _u(rng, 0, W, n), _u(rng, 20, H + 4, n)
        nx, ny = (xx - cx) / rx, (yy - cy) / ry
        dist = nx**2 + ny**2
        inside = (dist < 1) & (count > slot)[:, None, None] & ground
        shadow = ((nx + 0.8 * lx) ** 2 + (ny + 0.8 * ly) ** 2 < 1.1) & ~inside & (count > slot)[:, None, None]
        img[shadow] *= 0.6
        shade = 0.1 * (nx * lx + ny * ly) + 0.05 * (1 - dist) + _u(rng, -0.1, 0.05, n)
        img[:] = np.where(inside, img.mean(axis=(1, 2), keepdims=True) + shade, img)
        rock |= inside
    return rock


def _batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch of (images, masks), uint8 (n, H, W) each."""
    yy = np.arange(H, dtype=np.float32)[None, :, None]
    xx = np.arange(W, dtype=np.float32)[None, None, :]
    terrain, sky = _layout(rng, n, yy, xx)
    tex = _textures(rng, n, yy, xx)
    base = _u(rng, 0.12, 0.36, n)
    offsets = np.array([0.02, 0.03, -0.02], np.float32)[:, None] + 0.05 * rng.standard_normal((3, n)).astype(np.float32)
    contrast = _u(rng, 0.6, 1.4, n)
    idx = terrain[None].astype(np.intp) - 1
    img = np.take_along_axis(tex + offsets[:, :, None, None], idx, axis=0)[0] * contrast + base
    sky_val = base + _u(rng, 0.0, 0.2, n) * (1 - yy / H) + 0.01 * _noise(rng, n, 2, 4)[:, 0]
    img = np.where(sky, sky_val, img)
    rock = _rocks(rng, img, ~sky, yy, xx)
    img += 0.04 * _noise(rng, n, 2, 4)[:, 0] + 0.01 * rng.standard_normal((n, H, W), dtype=np.float32)
    mask = np.where(sky, 0, terrain).astype(np.uint8)
    holes = _noise(rng, n, 2, 4)[:, 0] + 0.5 * _noise(rng, n, 4, 8)[:, 0] < _u(rng, -1.8, 0.6, n)
    holes &= (rng.random(n) > _P_SINGLE)[:, None, None]
    mask[holes] = 0
    mask[rock] = 4
    mask[rng.random(n) < _P_EMPTY] = 0
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), mask


def generate_with_truth(n: int, seed: int, n_test: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Generate a synthetic dataset and the indices of the injected outlier pairs.

    Args:
        n: number of training pairs (>= 1).
        seed: makes the output reproducible: one seed, one dataset.
        n_test: number of unlabelled test images (0 leaves out ``test_set``).

    Returns:
        ({"training_set": (n, 2, 64, 128) uint8[, "test_set": (n_test, 64, 128) uint8]},
        sorted indices of the pairs carrying the shared outlier mask: at least 3 so a cleaner can
        see the group, at most 5% of ``n``, none when ``n < 60``).
    """
    for name, value, low in (("n", n, 1), ("n_test", n_test, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"{name} must be an integer >= {low}; got {value!r}.")
    seq = np.random.SeedSequence(int(seed))
    train_seq, test_seq, pick_seq = seq.spawn(3)
    images, masks = _generate_many(train_seq, n)
    n_out = min(max(3, round(_OUTLIER_FRACTION * n)), n // 20)
    outliers = np.sort(np.random.default_rng(pick_seq).choice(n, size=n_out, replace=False)).astype(np.int64)
    masks[outliers] = outlier_mask()
    arrays = {"training_set": np.stack([images, masks], axis=1)}
    if n_test:
        arrays["test_set"] = _generate_many(test_seq, n_test)[0]
    return arrays, outliers


def _generate_many(seq: np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((n, H, W), dtype=np.uint8)
    masks = np.empty((n, H, W), dtype=np.uint8)
    for b, child in zip(range(0, n, _BATCH), seq.spawn((n + _BATCH - 1) // _BATCH), strict=True):
        size = min(_BATCH, n - b)
        images[b : b + size], masks[b : b + size] = _batch(np.random.default_rng(child), size)
    return images, masks


def generate(n: int, seed: int, n_test: int = 0) -> dict[str, np.ndarray]:
    """Generate a synthetic dataset in the course layout (see :func:`generate_with_truth`)."""
    return generate_with_truth(n, seed, n_test)[0]


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` (e.g. from :func:`generate`) to a compressed ``.npz`` atomically.

    Raises:
        DataError: the path does not end in ``.npz``, or cannot be written.
    """
    if "training_set" not in arrays:
        raise DataError(f"write_npz needs a 'training_set' array; got keys {sorted(arrays)}.")
    return save_npz_atomic(path, arrays)
