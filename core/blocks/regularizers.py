"""Regularizers: how the model builder regularizes every block.

A regularizer is not a layer but a policy the builder consults: the kernel regularizer
given to every convolution, the layer inserted after each stage, and the drop-path rate
of residual branches.
"""

from __future__ import annotations

from typing import Any

import keras

from core.registry import REGULARIZERS


class Regularizer:
    """No regularization (base class: every hook returns nothing)."""

    drop_path: float = 0.0

    def kernel(self) -> Any:
        return None

    def after_stage(self, name: str) -> keras.layers.Layer | None:
        """A layer applied after every encoder/decoder stage (dropout), or None."""
        return None


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """No regularization."""


@REGULARIZERS.register("l2")
class L2(Regularizer):
    """L2 penalty on every convolution kernel."""

    def __init__(self, strength: float = 1e-4) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}.")
        self.strength = float(strength)

    def kernel(self) -> Any:
        return keras.regularizers.L2(self.strength)
