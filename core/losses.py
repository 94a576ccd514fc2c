"""Losses on labelled pixels. Class 0 (background/unlabelled) is excluded unless asked.

Every loss takes ``y_true`` (B, H, W) integer labels and ``y_pred`` (B, H, W, C) softmax
probabilities and is a registered, Keras-serializable ``keras.losses.Loss``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from core.registry import LOSSES

EPS = 1e-7


class PixelLoss(keras.losses.Loss):
    """Base: holds ``ignore_background`` and builds the labelled-pixel weight map."""

    def __init__(self, ignore_background: bool = True, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name or self.__class__.__name__.lower(), reduction="sum_over_batch_size", **kwargs)
        self.ignore_background = bool(ignore_background)

    def labelled(self, y_true: Any) -> Any:
        """1.0 where a pixel counts, 0.0 elsewhere; shape (B, H, W)."""
        y_true = ops.cast(y_true, "int32")
        if self.ignore_background:
            return ops.cast(ops.greater(y_true, 0), "float32")
        return ops.ones_like(y_true, dtype="float32")

    def get_config(self) -> dict[str, Any]:
        return {"ignore_background": self.ignore_background, "name": self.name}


def _prep(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) == 4:
        y_true = ops.squeeze(y_true, -1)
    return y_true, ops.cast(y_pred, "float32")


@LOSSES.register("ce")
class CrossEntropy(PixelLoss):
    """Cross-entropy averaged over labelled pixels."""

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _prep(y_true, y_pred)
        w = self.labelled(y_true)
        onehot = ops.one_hot(y_true, y_pred.shape[-1])
        nll = -ops.sum(onehot * ops.log(ops.clip(y_pred, EPS, 1.0)), axis=-1)
        # One scalar per batch: a mean over labelled pixels, not over all pixels.
        return ops.sum(nll * w) / ops.maximum(ops.sum(w), 1.0)
