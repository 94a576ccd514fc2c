"""The tf.data input pipeline: cache, seeded shuffle, augment, batch, prefetch.

Augmentation runs per element with ``num_parallel_calls=AUTOTUNE`` (consecutive affine
augmentations are fused into one warp by :class:`~ablate.augment.Policy`); on a 2-core CPU the
full seed-final policy yields ~3,300 images/s, ~75x what a U-Net training step consumes
(``benchmarks/input_pipeline.py``), so per-batch vectorization is not needed.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ablate.augment import Policy


def train_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, seed: int,
                  policy: Policy | None = None, shuffle_buffer: int = 1024) -> tf.data.Dataset:
    """Training batches. The run's seed fixes data order and the augmentation stream.

    Each epoch reshuffles and redraws the augmentations; two datasets built with the same
    seed yield the same sequence of batches.
    """
    ds = tf.data.Dataset.from_tensor_slices((images, masks)).cache()
    ds = ds.shuffle(min(shuffle_buffer, len(images)), seed=seed, reshuffle_each_iteration=True)
    if policy:
        policy.prepare(images, masks)  # e.g. copy-paste's bank of patches of its class
        # One int64 per element from a seeded stream -> a stateless seed pair per element.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda pair, s: policy(pair[0], pair[1], s), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Validation batches in file order, without augmentation."""
    return tf.data.Dataset.from_tensor_slices((images, masks)).cache().batch(batch_size).prefetch(tf.data.AUTOTUNE)
