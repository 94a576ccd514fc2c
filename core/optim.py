"""Optimizers and learning-rate schedules, registered by name.

An optimizer entry is a builder taking ``learning_rate`` (a float or a Keras
``LearningRateSchedule``) plus its own keys. A schedule gives the learning rate
(``learning_rate(base_lr, epochs, steps_per_epoch)``) and any callbacks it needs.

Example:
    >>> lr = SCHEDULES.build({"type": "cosine", "warmup_epochs": 2}).learning_rate(1e-3, 30, 180)
    >>> opt = OPTIMIZERS.get("sgd")(learning_rate=lr, momentum=0.9, nesterov=True)
"""

from __future__ import annotations

import keras

from ablate.errors import SpecError
from ablate.registry import OPTIMIZERS, SCHEDULES

LearningRate = float | keras.optimizers.schedules.LearningRateSchedule


@OPTIMIZERS.register("adamw")
def adamw(learning_rate: LearningRate = 1e-3, weight_decay: float = 1e-4,
          clipnorm: float | None = None) -> keras.optimizers.Optimizer:
    """AdamW: Adam with decoupled weight decay."""
    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm)


@OPTIMIZERS.register("adam")
def adam(learning_rate: LearningRate = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
         clipnorm: float | None = None) -> keras.optimizers.Optimizer:
    """Adam without weight decay (regularize with a regularizer block instead)."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, clipnorm=clipnorm)


@OPTIMIZERS.register("sgd")
def sgd(learning_rate: LearningRate = 1e-2, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float | None = None, clipnorm: float | None = None) -> keras.optimizers.Optimizer:
    """SGD with (optionally Nesterov) momentum; 0.9 is the usual momentum for segmentation."""
    if not 0.0 <= momentum < 1.0:
        raise SpecError(f"sgd: momentum must be in [0, 1); got {momentum}.")
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay, clipnorm=clipnorm)


@SCHEDULES.register("plateau")
class Plateau:
    """ReduceLROnPlateau on validation mIoU.

    Args:
        factor: multiplies the learning rate after ``patience`` epochs without a better val mIoU.
        patience: epochs to wait.
        min_lr: the floor.
    """

    def __init__(self, factor: float = 0.5, patience: int = 3, min_lr: float = 1e-6) -> None:
        self.factor, self.patience, self.min_lr = factor, patience, min_lr

    def callbacks(self, epochs: int, steps_per_epoch: int) -> list[keras.callbacks.Callback]:
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_miou", mode="max", factor=self.factor,
                                                  patience=self.patience, min_lr=self.min_lr, verbose=0)]

    def learning_rate(self, base_lr: float, epochs: int, steps_per_epoch: int) -> LearningRate:
        return base_lr


@SCHEDULES.register("constant")
class Constant(Plateau):
    """A constant learning rate."""

    def __init__(self) -> None:
        pass

    def callbacks(self, epochs: int, steps_per_epoch: int) -> list[keras.callbacks.Callback]:
        return []


@SCHEDULES.register("cosine")
class Cosine:
    """Linear warm-up from 0 to the base rate, then cosine decay to ``min_lr_ratio`` x base.

    A Keras ``CosineDecay`` schedule stepped per batch (no callbacks), so it is saved with the
    optimizer. A warm-up as long as the run (e.g. a one-epoch smoke run) is cut to leave one
    decay step.

    Args:
        warmup_epochs: epochs of linear warm-up (may be fractional; 0 for none).
        min_lr_ratio: the final learning rate as a fraction of the base rate.

    Example:
        >>> Cosine(warmup_epochs=1).learning_rate(1e-3, epochs=30, steps_per_epoch=180)(0)
    """

    def __init__(self, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.0) -> None:
        if warmup_epochs < 0:
            raise SpecError(f"cosine: warmup_epochs must be >= 0; got {warmup_epochs}.")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise SpecError(f"cosine: min_lr_ratio must be in [0, 1]; got {min_lr_ratio}.")
        self.warmup_epochs, self.min_lr_ratio = float(warmup_epochs), float(min_lr_ratio)

    def callbacks(self, epochs: int, steps_per_epoch: int) -> list[keras.callbacks.Callback]:
        return []

    def learning_rate(self, base_lr: float, epochs: int,
                      steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
        total = max(1, epochs * steps_per_epoch)
        warmup = min(round(self.warmup_epochs * steps_per_epoch), total - 1)
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=total, alpha=self.min_lr_ratio)
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, alpha=self.min_lr_ratio,
                                                      warmup_target=base_lr, warmup_steps=warmup)
