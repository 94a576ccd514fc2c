"""Optimizers and learning-rate schedules, registered by name."""

from __future__ import annotations

from typing import Any

import keras

from core.registry import OPTIMIZERS, SCHEDULES


@OPTIMIZERS.register("adamw")
def adamw(learning_rate: float = 1e-3, weight_decay: float = 1e-4, clipnorm: float | None = None) -> keras.optimizers.Optimizer:
    """AdamW: Adam with decoupled weight decay."""
    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm)


@SCHEDULES.register("plateau")
class Plateau:
    """ReduceLROnPlateau on validation mIoU."""

    def __init__(self, factor: float = 0.5, patience: int = 3, min_lr: float = 1e-6) -> None:
        self.factor, self.patience, self.min_lr = factor, patience, min_lr

    def callbacks(self, epochs: int, steps_per_epoch: int) -> list[keras.callbacks.Callback]:
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_miou", mode="max", factor=self.factor,
                                                  patience=self.patience, min_lr=self.min_lr, verbose=0)]

    def learning_rate(self, base_lr: float, epochs: int, steps_per_epoch: int) -> Any:
        return base_lr


@SCHEDULES.register("constant")
class Constant(Plateau):
    """A constant learning rate."""

    def __init__(self) -> None:
        pass

    def callbacks(self, epochs: int, steps_per_epoch: int) -> list[keras.callbacks.Callback]:
        return []
