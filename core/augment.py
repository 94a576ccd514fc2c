"""Augmentations applied jointly to image and mask inside the tf.data graph.

Each augmentation is called as ``aug(image, mask, seed)`` with ``image`` (H, W, 1) float32,
``mask`` (H, W) uint8 and ``seed`` a shape-[2] int tensor for stateless random ops, so a
run's seed fixes the whole augmentation stream. Masks are never interpolated other than
by nearest neighbour.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from core.registry import AUGMENTATIONS


class Augmentation:
    """Base: applies ``transform`` with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}.")
        self.p = float(p)

    def prepare(self, images: Any, masks: Any) -> None:
        """Hook for augmentations that need the training set (copy-paste); default: nothing."""

    def __call__(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        coin_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        apply = tf.random.stateless_uniform([], coin_seed) < self.p
        return tf.cond(apply, lambda: self.transform(image, mask, op_seed), lambda: (image, mask))

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError


@AUGMENTATIONS.register("hflip")
class HorizontalFlip(Augmentation):
    """Mirror image and mask left-right."""

    def transform(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.reverse(image, axis=[1]), tf.reverse(mask, axis=[1])


class Policy:
    """A list of augmentations applied in order, each with its own derived seed."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        self.augs = [AUGMENTATIONS.build(c) for c in configs]

    def prepare(self, images: Any, masks: Any) -> None:
        for aug in self.augs:
            aug.prepare(images, masks)

    def __call__(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        for i, aug in enumerate(self.augs):
            image, mask = aug(image, mask, tf.random.experimental.stateless_fold_in(seed, i))
        return image, mask

    def __bool__(self) -> bool:
        return bool(self.augs)
