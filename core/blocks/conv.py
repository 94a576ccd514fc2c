"""Convolution blocks for encoder and decoder stages."""

from __future__ import annotations

from typing import Any

import keras

from core.blocks.base import Block, conv_bn_relu, run_layers
from core.registry import CONV_BLOCKS


@CONV_BLOCKS.register("double")
class DoubleConv(Block):
    """Two conv-BN-ReLU units: the classic U-Net stage.

    Example:
        >>> CONV_BLOCKS.build({"type": "double"}, filters=16)
    """

    def __init__(self, filters: int, kernel_size: int = 3, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.kernel_size = int(kernel_size)
        self.units = conv_bn_relu(filters, kernel_size, kernel_regularizer=self.kernel_regularizer) + conv_bn_relu(
            filters, kernel_size, kernel_regularizer=self.kernel_regularizer
        )

    def call(self, x: Any, training: Any = None) -> Any:
        return run_layers(self.units, x, training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": self.kernel_size}
