"""Bottlenecks: the block at the lowest resolution, between encoder and decoder."""

from __future__ import annotations

from typing import Any

import keras

from core.blocks.base import Block, conv_bn_relu, run_layers
from core.registry import BOTTLENECKS


@BOTTLENECKS.register("plain")
class PlainBottleneck(Block):
    """Two conv-BN-ReLU units, as in a plain U-Net."""

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        reg = self.kernel_regularizer
        self.units = conv_bn_relu(filters, kernel_regularizer=reg) + conv_bn_relu(filters, kernel_regularizer=reg)

    def call(self, x: Any, training: Any = None) -> Any:
        return run_layers(self.units, x, training)


class SqueezeExcite(keras.layers.Layer):
    """Channel attention: global pooling, bottleneck MLP, sigmoid gate."""

    def __init__(self, ratio: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ratio = int(ratio)

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.squeeze = keras.layers.Dense(max(channels // self.ratio, 4), activation="relu")
        self.excite = keras.layers.Dense(channels, activation="sigmoid")
        self.squeeze.build((None, channels))
        self.excite.build((None, max(channels // self.ratio, 4)))

    def call(self, x: Any) -> Any:
        s = keras.ops.mean(x, axis=(1, 2))
        s = self.excite(self.squeeze(s))
        return x * s[:, None, None, :]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ratio": self.ratio}


keras.saving.register_keras_serializable(package="ablate", name="SqueezeExcite")(SqueezeExcite)


@BOTTLENECKS.register("se_da")
class SEDilatedBottleneck(Block):
    """Squeeze-excitation then parallel dilated (atrous) convolutions, summed (the report's choice)."""

    def __init__(
        self,
        filters: int,
        rates: tuple[int, ...] | list[int] = (1, 2, 4),
        se_ratio: int = 8,
        kernel_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        if not rates or any(int(r) < 1 for r in rates):
            raise ValueError(f"rates must be a non-empty list of positive integers, got {rates!r}.")
        self.rates = [int(r) for r in rates]
        self.se_ratio = int(se_ratio)
        reg = self.kernel_regularizer
        self.inp = conv_bn_relu(filters, kernel_regularizer=reg)
        self.se = SqueezeExcite(self.se_ratio)
        self.branches = [conv_bn_relu(filters, dilation_rate=r, kernel_regularizer=reg) for r in self.rates]
        self.out = conv_bn_relu(filters, 1, kernel_regularizer=reg)

    def call(self, x: Any, training: Any = None) -> Any:
        x = self.se(run_layers(self.inp, x, training))
        y = run_layers(self.branches[0], x, training)
        for branch in self.branches[1:]:
            y = y + run_layers(branch, x, training)
        return run_layers(self.out, y, training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rates": self.rates, "se_ratio": self.se_ratio}
