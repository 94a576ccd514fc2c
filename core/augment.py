"""Augmentations applied jointly to image and mask inside the tf.data graph.

Each augmentation is called as ``aug(image, mask, seed)`` with ``image`` (H, W, C) float32
(C = 1 grayscale or 3 RGB), ``mask`` (H, W) uint8 and ``seed`` a shape-[2] int tensor for
stateless random ops, so a run's seed fixes the whole augmentation stream. Masks are never
interpolated other than by nearest neighbour.

Augmentations follow the run's task (``set_task``; :class:`Policy` takes it, Mars by default).
Pixels moved in from outside the image (zoom out, rotate, shift, shear, elastic) and cutout's
holes get intensity 0 and the task's ignore label (Mars: 0, unlabelled), so the losses and the
metric leave them out. A task without an ignore label has no label that is not scored: there,
moved-in pixels repeat the nearest edge pixel (image and mask), and cutout is refused with a
SpecError. Copy-paste pastes the class it names (``class_name``, Mars: ``big_rock``).

Geometric augmentations (zoom, rotate, shift, shear) are affine maps: a :class:`Policy`
composes consecutive ones into one matrix and warps once (bilinear for the image, nearest
for the mask, with the same matrix), which is faster and interpolates the image only once.

Example:
    >>> policy = Policy([{"type": "hflip", "p": 0.5}, {"type": "rotate", "p": 0.5, "degrees": 10}])
    >>> image, mask = policy(image, mask, tf.constant([0, 42]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from ablate.errors import SpecError
from ablate.registry import AUGMENTATIONS
from ablate.task import MARS, Task


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SpecError(message)


class Augmentation:
    """Base: applies ``transform`` with probability ``p``.

    Args:
        p: probability that an image is transformed.
    """

    def __init__(self, p: float = 0.5) -> None:
        _check(0.0 <= p <= 1.0, f"{type(self).__name__}: p must be in [0, 1]; got {p}.")
        self.p = float(p)
        self.task = MARS

    def set_task(self, task: Task) -> None:
        """The run's task (Mars until set): its ignore label fills pixels that hold no image content."""
        self.task = task

    @property
    def fill_label(self) -> int | None:
        """The label of pixels moved in from outside the image: the ignore label; None: repeat the edge."""
        return self.task.ignore_label

    def prepare(self, images: Any, masks: Any) -> None:
        """Hook for augmentations that need the training set (copy-paste); default: nothing."""

    def coin(self, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(whether to apply, seed for the transform itself), both from ``seed``."""
        coin_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        return tf.random.stateless_uniform([], coin_seed) < self.p, op_seed

    def __call__(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        apply, op_seed = self.coin(seed)
        return tf.cond(apply, lambda: self.transform(image, mask, op_seed), lambda: (image, mask))

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError


def _size(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    shape = tf.cast(tf.shape(image), tf.float32)
    return shape[0], shape[1]


def _uniform(seed: tf.Tensor, low: float, high: float, shape: Sequence[int] = ()) -> tf.Tensor:
    return tf.random.stateless_uniform(list(shape), seed, minval=low, maxval=high)


def affine_about_centre(a: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                        shift: tuple[Any, Any] = (0.0, 0.0)) -> tf.Tensor:
    """3x3 output->input map ``in = a (out - c) + c - shift`` in (x, y) pixel coordinates."""
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    a = tf.cast(a, tf.float32)
    tx = cx - a[0, 0] * cx - a[0, 1] * cy - shift[0]
    ty = cy - a[1, 0] * cx - a[1, 1] * cy - shift[1]
    return tf.stack([[a[0, 0], a[0, 1], tx], [a[1, 0], a[1, 1], ty], [0.0, 0.0, 1.0]])


def warp(image: tf.Tensor, mask: tf.Tensor, matrix: tf.Tensor,
         fill_label: int | None = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Warps image (bilinear) and mask (nearest) with one 3x3 output->input matrix.

    Pixels from outside the image get intensity 0 and ``fill_label``; with ``fill_label`` None
    they repeat the nearest edge pixel (image and mask).
    """
    transform = tf.reshape(matrix / matrix[2, 2], [9])[:8][None]
    out_shape = tf.shape(image)[:2]
    mode = "NEAREST" if fill_label is None else "CONSTANT"

    def apply(x: tf.Tensor, interpolation: str, fill: float) -> tf.Tensor:
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x[None], transforms=transform, output_shape=out_shape, fill_value=fill,
            interpolation=interpolation, fill_mode=mode)[0]

    new_image = tf.ensure_shape(apply(image, "BILINEAR", 0.0), image.shape)
    new_mask = tf.ensure_shape(apply(mask[..., None], "NEAREST", float(fill_label or 0))[..., 0], mask.shape)
    return new_image, new_mask


class AffineAugmentation(Augmentation):
    """Base of geometric augmentations: ``matrix`` gives a random 3x3 output->input map."""

    def matrix(self, seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return warp(image, mask, self.matrix(seed, *_size(image)), self.fill_label)


@AUGMENTATIONS.register("hflip")
class HorizontalFlip(Augmentation):
    """Mirror image and mask left-right."""

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.reverse(image, axis=[1]), tf.reverse(mask, axis=[1])


@AUGMENTATIONS.register("vflip")
class VerticalFlip(Augmentation):
    """Mirror image and mask top-bottom (the rover camera's sky is rarely in frame)."""

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.reverse(image, axis=[0]), tf.reverse(mask, axis=[0])


@AUGMENTATIONS.register("zoom")
class Zoom(AffineAugmentation):
    """Zoom about the centre by a factor drawn uniformly from ``scale`` (>1 zooms in).

    Args:
        p: probability.
        scale: (low, high) magnification range, e.g. ``[0.8, 1.25]``.
    """

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.8, 1.25)) -> None:
        super().__init__(p)
        _check(len(scale) == 2 and 0 < scale[0] <= scale[1],
               f"zoom: scale must be [low, high] with 0 < low <= high; got {scale!r}.")
        self.scale = (float(scale[0]), float(scale[1]))

    def matrix(self, seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        inv = 1.0 / _uniform(seed, *self.scale)
        return affine_about_centre(tf.linalg.diag(tf.stack([inv, inv])), height, width)


@AUGMENTATIONS.register("rotate")
class Rotate(AffineAugmentation):
    """Rotate about the centre by an angle uniform in [-degrees, degrees].

    Args:
        p: probability.
        degrees: the largest rotation.
    """

    def __init__(self, p: float = 0.5, degrees: float = 15.0) -> None:
        super().__init__(p)
        _check(0 <= degrees <= 180, f"rotate: degrees must be in [0, 180]; got {degrees}.")
        self.degrees = float(degrees)

    def matrix(self, seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        theta = _uniform(seed, -self.degrees, self.degrees) * (math.pi / 180.0)
        c, s = tf.cos(theta), tf.sin(theta)
        return affine_about_centre(tf.stack([[c, -s], [s, c]]), height, width)


@AUGMENTATIONS.register("shift")
class Shift(AffineAugmentation):
    """Translate by up to ``fraction`` of the width and height (each drawn uniformly).

    Args:
        p: probability.
        fraction: the largest shift as a fraction of the image side.
    """

    def __init__(self, p: float = 0.5, fraction: float = 0.1) -> None:
        super().__init__(p)
        _check(0 <= fraction < 1, f"shift: fraction must be in [0, 1); got {fraction}.")
        self.fraction = float(fraction)

    def matrix(self, seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        t = _uniform(seed, -self.fraction, self.fraction, [2]) * tf.stack([width, height])
        return affine_about_centre(tf.eye(2), height, width, shift=(t[0], t[1]))


@AUGMENTATIONS.register("shear")
class Shear(AffineAugmentation):
    """Shear along x and y by angles uniform in [-degrees, degrees].

    Args:
        p: probability.
        degrees: the largest shear angle.
    """

    def __init__(self, p: float = 0.5, degrees: float = 10.0) -> None:
        super().__init__(p)
        _check(0 <= degrees < 90, f"shear: degrees must be in [0, 90); got {degrees}.")
        self.degrees = float(degrees)

    def matrix(self, seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        k = tf.tan(_uniform(seed, -self.degrees, self.degrees, [2]) * (math.pi / 180.0))
        return affine_about_centre(tf.stack([[1.0, k[0]], [k[1], 1.0]]), height, width)


@AUGMENTATIONS.register("cutout")
class Cutout(Augmentation):
    """Blank ``holes`` rectangles: image 0 and the task's ignore label (Mars: 0), so the loss ignores them.

    Each side is uniform in [size/2, size] of the image side; the centre is uniform. A task
    without an ignore label has no label for a hole: ``set_task`` refuses it (a SpecError).

    Args:
        p: probability.
        holes: rectangles per image.
        size: the largest side as a fraction of the image side.
    """

    def __init__(self, p: float = 0.5, holes: int = 1, size: float = 0.25) -> None:
        super().__init__(p)
        _check(holes >= 1, f"cutout: holes must be >= 1; got {holes}.")
        _check(0 < size <= 1, f"cutout: size must be in (0, 1]; got {size}.")
        self.holes, self.size = int(holes), float(size)

    def set_task(self, task: Task) -> None:
        task.require_ignore_label("cutout")
        super().set_task(task)

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        h, w = _size(image)
        dims = tf.stack([h, w])
        centre = _uniform(seed, 0.0, 1.0, [self.holes, 2]) * dims
        half = _uniform(tf.random.experimental.stateless_fold_in(seed, 1), self.size / 2, self.size,
                        [self.holes, 2]) * dims / 2.0
        ys = tf.range(h)[None, :, None]
        xs = tf.range(w)[None, None, :]
        lo, hi = centre - half, centre + half
        inside = ((ys >= lo[:, 0, None, None]) & (ys < hi[:, 0, None, None])
                  & (xs >= lo[:, 1, None, None]) & (xs < hi[:, 1, None, None]))
        hole = tf.reduce_any(inside, axis=0)
        fill = tf.fill(tf.shape(mask), tf.constant(self.fill_label or 0, mask.dtype))
        return tf.where(hole[..., None], 0.0, image), tf.where(hole, fill, mask)


def _gather(flat: tf.Tensor, y: tf.Tensor, x: tf.Tensor, height: int, width: int,
            fill: float | int | None = 0) -> tf.Tensor:
    """Values of a flattened (H*W, ...) tensor at integer (y, x); ``fill`` outside the image
    (None: the nearest edge pixel's value)."""
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    idx = tf.clip_by_value(y, 0, height - 1) * width + tf.clip_by_value(x, 0, width - 1)
    values = tf.gather(flat, idx)
    if fill is None:
        return values
    if values.shape.rank > inside.shape.rank:
        inside = inside[..., None]
    return tf.where(inside, values, tf.cast(tf.fill(tf.shape(values), fill), values.dtype))


@AUGMENTATIONS.register("elastic")
class Elastic(Augmentation):
    """Elastic deformation: a smooth random displacement field (bicubic over a coarse grid).

    The image is sampled bilinearly and the mask by nearest neighbour at the same displaced
    coordinates.

    Args:
        p: probability.
        alpha: the largest displacement of a control point, in pixels.
        spacing: pixels between control points; larger gives smoother fields.
    """

    def __init__(self, p: float = 0.5, alpha: float = 4.0, spacing: int = 16) -> None:
        super().__init__(p)
        _check(alpha >= 0, f"elastic: alpha must be >= 0; got {alpha}.")
        _check(spacing >= 2, f"elastic: spacing must be >= 2 pixels; got {spacing}.")
        self.alpha, self.spacing = float(alpha), int(spacing)

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        height, width = image.shape[0], image.shape[1]
        grid = [math.ceil(height / self.spacing) + 1, math.ceil(width / self.spacing) + 1, 2]
        field = tf.image.resize(_uniform(seed, -self.alpha, self.alpha, grid), [height, width], method="bicubic")
        yy, xx = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
        sy, sx = yy + field[..., 0], xx + field[..., 1]
        flat_mask = tf.reshape(mask, [-1])
        new_mask = _gather(flat_mask, tf.cast(tf.round(sy), tf.int32), tf.cast(tf.round(sx), tf.int32), height, width,
                           self.fill_label)
        edge = None if self.fill_label is None else 0.0  # the image's fill: 0, or the edge with the mask's
        flat_image = tf.reshape(image, [-1, image.shape[-1]])
        y0, x0 = tf.floor(sy), tf.floor(sx)
        wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
        y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
        corner = lambda dy, dx: _gather(flat_image, y0 + dy, x0 + dx, height, width, edge)  # noqa: E731
        new_image = ((1 - wy) * ((1 - wx) * corner(0, 0) + wx * corner(0, 1))
                     + wy * ((1 - wx) * corner(1, 0) + wx * corner(1, 1)))
        return new_image, new_mask


@AUGMENTATIONS.register("brightness_contrast")
class BrightnessContrast(Augmentation):
    """Shift brightness by up to ``brightness`` and scale contrast by 1 +- ``contrast``; mask unchanged.

    Args:
        p: probability.
        brightness: the largest additive change (images are in [0, 1]).
        contrast: the largest relative change of the contrast about the image mean.
    """

    def __init__(self, p: float = 0.5, brightness: float = 0.1, contrast: float = 0.2) -> None:
        super().__init__(p)
        _check(0 <= brightness <= 1, f"brightness_contrast: brightness must be in [0, 1]; got {brightness}.")
        _check(0 <= contrast < 1, f"brightness_contrast: contrast must be in [0, 1); got {contrast}.")
        self.brightness, self.contrast = float(brightness), float(contrast)

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        u = _uniform(seed, -1.0, 1.0, [2])
        mean = tf.reduce_mean(image)
        out = (image - mean) * (1.0 + self.contrast * u[1]) + mean + self.brightness * u[0]
        return tf.clip_by_value(out, 0.0, 1.0), mask


@AUGMENTATIONS.register("copy_paste")
class CopyPaste(Augmentation):
    """Paste a region of a rare class (Mars: big rock) cut from another training image at a random place.

    ``prepare(images, masks)`` builds a bank of up to ``bank_size`` square patches, each centred
    on a pixel of the class of a training image holding at least ``min_pixels`` of them. The
    transform writes the patch's image pixels and the class's label where the patch's own mask
    holds it, nowhere else.

    Args:
        p: probability.
        size: patch side in pixels (clipped to the image).
        bank_size: the most patches kept (spread evenly over the candidate images).
        min_pixels: pixels of the class an image needs to give a patch.
        class_name: the class to paste, one of the task's (a SpecError names them otherwise).

    Example:
        >>> aug = AUGMENTATIONS.build({"type": "copy_paste", "class_name": "car"})
        >>> aug.set_task(task)  # a task with a class "car"
    """

    def __init__(self, p: float = 0.5, size: int = 32, bank_size: int = 256, min_pixels: int = 16,
                 class_name: str = "big_rock") -> None:
        super().__init__(p)
        _check(size >= 2, f"copy_paste: size must be >= 2 pixels; got {size}.")
        _check(bank_size >= 1, f"copy_paste: bank_size must be >= 1; got {bank_size}.")
        _check(min_pixels >= 1, f"copy_paste: min_pixels must be >= 1; got {min_pixels}.")
        self.size, self.bank_size, self.min_pixels = int(size), int(bank_size), int(min_pixels)
        self.class_name = str(class_name)
        self.class_id: int | None = None  # the class's label, once the task is known (set_task; Mars by default)
        self.bank: tuple[np.ndarray, np.ndarray] | None = None

    def set_task(self, task: Task) -> None:
        class_id = task.scored_class_id(self.class_name, where="copy_paste.class_name")
        super().set_task(task)
        self.class_id = class_id

    def prepare(self, images: Any, masks: Any) -> None:
        if self.class_id is None:
            self.set_task(self.task)
        images, masks = np.asarray(images, np.float32), np.asarray(masks)
        height, width = masks.shape[1:3]
        ph, pw = min(self.size, height), min(self.size, width)
        rocks = masks == self.class_id
        candidates = np.flatnonzero(rocks.sum(axis=(1, 2)) >= self.min_pixels)
        if len(candidates) > self.bank_size:
            candidates = candidates[np.linspace(0, len(candidates) - 1, self.bank_size).round().astype(int)]
        patches, patch_rocks = [], []
        for i in candidates:
            ys, xs = np.nonzero(rocks[i])
            k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)  # the rock pixel nearest the centroid
            top = int(np.clip(ys[k] - ph // 2, 0, height - ph))
            left = int(np.clip(xs[k] - pw // 2, 0, width - pw))
            patches.append(images[i, top : top + ph, left : left + pw])
            patch_rocks.append(rocks[i, top : top + ph, left : left + pw])
        shape = (0, ph, pw, images.shape[-1])
        self.bank = (np.stack(patches) if patches else np.zeros(shape, np.float32),
                     np.stack(patch_rocks).astype(np.uint8) if patch_rocks else np.zeros(shape[:3], np.uint8))

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.bank is None:
            raise RuntimeError("copy_paste needs the training set first: call prepare(images, masks).")
        bank_images, bank_rocks = self.bank
        n, ph, pw = bank_rocks.shape
        if n == 0:  # no training image holds enough of the class: nothing to paste
            return image, mask
        height, width = image.shape[0], image.shape[1]
        pick = tf.random.stateless_uniform([3], seed, minval=0, maxval=2**30, dtype=tf.int32)
        k, top, left = pick[0] % n, pick[1] % (height - ph + 1), pick[2] % (width - pw + 1)
        patch = tf.image.pad_to_bounding_box(tf.gather(tf.constant(bank_images), k), top, left, height, width)
        rock = tf.image.pad_to_bounding_box(tf.gather(tf.constant(bank_rocks), k)[..., None], top, left, height, width)
        rock = rock[..., 0] > 0
        return (tf.where(rock[..., None], patch, image),
                tf.where(rock, tf.constant(self.class_id, mask.dtype), mask))


class Policy:
    """A list of augmentations applied in order, each with its own derived seed.

    Runs of consecutive affine augmentations are composed and warped once.

    Args:
        configs: augmentation blocks, e.g. ``[{"type": "hflip", "p": 0.5}]``.
        task: the run's task (the ignore label that fills, the class copy-paste names); a block
            the task cannot take raises a SpecError here, before training.
    """

    def __init__(self, configs: Sequence[dict[str, Any]], task: Task = MARS) -> None:
        self.augs = [AUGMENTATIONS.build(c) for c in configs]
        self.task = task
        for aug in self.augs:
            aug.set_task(task)

    def prepare(self, images: Any, masks: Any) -> None:
        for aug in self.augs:
            aug.prepare(images, masks)

    def __call__(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        run: list[tuple[AffineAugmentation, tf.Tensor]] = []
        for i, aug in enumerate(self.augs):
            aug_seed = tf.random.experimental.stateless_fold_in(seed, i)
            if isinstance(aug, AffineAugmentation):
                run.append((aug, aug_seed))
                continue
            image, mask = _warp_run(run, image, mask)
            run = []
            image, mask = aug(image, mask, aug_seed)
        return _warp_run(run, image, mask)

    def __bool__(self) -> bool:
        return bool(self.augs)


def _warp_run(run: list[tuple[AffineAugmentation, tf.Tensor]], image: tf.Tensor,
              mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Applies consecutive affine augmentations as one warp (skipped when none fires)."""
    if not run:
        return image, mask
    height, width = _size(image)
    matrix, applied = tf.eye(3), tf.constant(False)
    for aug, seed in run:
        apply, op_seed = aug.coin(seed)
        # Output->input maps compose left to right: in = M1 (M2 out) for aug 1 then aug 2.
        matrix = matrix @ tf.where(apply, aug.matrix(op_seed, height, width), tf.eye(3))
        applied = applied | apply
    fill = run[0][0].fill_label  # one task for the whole policy
    return tf.cond(applied, lambda: warp(image, mask, matrix, fill), lambda: (image, mask))
