"""Bottlenecks: the block at the lowest resolution, between encoder and decoder.

The bottleneck map is the task's input divided by 2^depth (``ablate.task.check_depth`` keeps at
least 2 pixels a side). On the Mars task's 64x128 input it is small (8x16 at depth 3, 4x8 at
depth 4, 2x4 at depth 5), so dilation rates and pooling bins default to values that still see
real pixels there; on a larger input they see relatively less context. The transformer
bottleneck lives in ``ablate.blocks.transformer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ablate.blocks.base import Block, SqueezeExcite, conv_bn_relu, resize, resize_to, run_layers
from ablate.registry import BOTTLENECKS

__all__ = ["ASPP", "DilatedBottleneck", "PlainBottleneck", "PyramidPooling", "SEBottleneck",
           "SEDilatedBottleneck", "SqueezeExcite"]


def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    if isinstance(values, (str, bytes)) or not values or any(int(v) < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}.")
    return [int(v) for v in values]


@BOTTLENECKS.register("plain")
class PlainBottleneck(Block):
    """Two conv-BN-ReLU units, as in a plain U-Net.

    Example:
        >>> BOTTLENECKS.build({"type": "plain"}, filters=64)
    """

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        reg = self.kernel_regularizer
        self.units = conv_bn_relu(filters, kernel_regularizer=reg) + conv_bn_relu(filters, kernel_regularizer=reg)

    def call(self, x: Any, training: Any = None) -> Any:
        return run_layers(self.units, x, training)


@BOTTLENECKS.register("se")
class SEBottleneck(Block):
    """Two conv-BN-ReLU units followed by squeeze-excitation channel attention.

    Example:
        >>> BOTTLENECKS.build({"type": "se", "se_ratio": 4}, filters=64)
    """

    def __init__(self, filters: int, se_ratio: int = 8, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.se_ratio = int(se_ratio)
        reg = self.kernel_regularizer
        self.units = conv_bn_relu(filters, kernel_regularizer=reg) + conv_bn_relu(filters, kernel_regularizer=reg)
        self.se = SqueezeExcite(self.se_ratio)

    def call(self, x: Any, training: Any = None) -> Any:
        return self.se(run_layers(self.units, x, training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "se_ratio": self.se_ratio}


@BOTTLENECKS.register("da")
class DilatedBottleneck(Block):
    """Parallel dilated (atrous) 3x3 convolutions at ``rates``, summed, then a 1x1 conv.

    Example:
        >>> BOTTLENECKS.build({"type": "da", "rates": [1, 2]}, filters=64)
    """

    def __init__(
        self, filters: int, rates: Sequence[int] = (1, 2, 4), kernel_regularizer: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.rates = _positive_ints("rates", rates)
        reg = self.kernel_regularizer
        self.inp = conv_bn_relu(filters, kernel_regularizer=reg)
        self.branches = [conv_bn_relu(filters, dilation_rate=r, kernel_regularizer=reg) for r in self.rates]
        self.out = conv_bn_relu(filters, 1, kernel_regularizer=reg)

    def atrous(self, x: Any, training: Any = None) -> Any:
        y = run_layers(self.branches[0], x, training)
        for branch in self.branches[1:]:
            y = y + run_layers(branch, x, training)
        return run_layers(self.out, y, training)

    def call(self, x: Any, training: Any = None) -> Any:
        return self.atrous(run_layers(self.inp, x, training), training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rates": self.rates}


@BOTTLENECKS.register("se_da")
class SEDilatedBottleneck(DilatedBottleneck):
    """Squeeze-excitation then parallel dilated (atrous) convolutions, summed (the report's choice).

    Example:
        >>> BOTTLENECKS.build({"type": "se_da", "rates": [1, 2, 4]}, filters=64)
    """

    def __init__(
        self,
        filters: int,
        rates: Sequence[int] = (1, 2, 4),
        se_ratio: int = 8,
        kernel_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, rates, kernel_regularizer, **kwargs)
        self.se_ratio = int(se_ratio)
        self.se = SqueezeExcite(self.se_ratio)

    def call(self, x: Any, training: Any = None) -> Any:
        return self.atrous(self.se(run_layers(self.inp, x, training)), training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "se_ratio": self.se_ratio}


@BOTTLENECKS.register("aspp")
class ASPP(Block):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3 at ``rates`` and image pooling, concatenated.

    The image-pooling branch averages the whole map to 1x1 and broadcasts it back, so it works on
    any map size (2x4 and 4x8 included). It has no batch norm: on a 1x1 map with small batches the
    batch statistics are degenerate.

    Example:
        >>> BOTTLENECKS.build({"type": "aspp", "rates": [1, 2, 3]}, filters=64)
    """

    def __init__(
        self, filters: int, rates: Sequence[int] = (1, 2, 3), kernel_regularizer: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.rates = _positive_ints("rates", rates)
        reg = self.kernel_regularizer
        self.branches = [conv_bn_relu(filters, 1, kernel_regularizer=reg)] + [
            conv_bn_relu(filters, dilation_rate=r, kernel_regularizer=reg) for r in self.rates
        ]
        self.pool_conv = keras.layers.Conv2D(filters, 1, activation="relu", kernel_regularizer=reg)
        self.project = conv_bn_relu(filters, 1, kernel_regularizer=reg)

    def call(self, x: Any, training: Any = None) -> Any:
        outs = [run_layers(branch, x, training) for branch in self.branches]
        pooled = self.pool_conv(ops.mean(x, axis=(1, 2), keepdims=True))
        outs.append(pooled * ops.ones_like(outs[0][..., :1]))  # broadcast 1x1 -> HxW
        return run_layers(self.project, ops.concatenate(outs, axis=-1), training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rates": self.rates}


@BOTTLENECKS.register("pyramid")
class PyramidPooling(Block):
    """PSP pyramid pooling: average-pool to ``bins`` grids, 1x1 conv, upsample, concat, 3x3 conv.

    A bin larger than the map is clipped to the map's size per axis (on a 2x4 map, bins 1, 2, 4
    become 1x1, 2x2 and 2x4) and repeated grids are dropped, so any depth works.

    Example:
        >>> BOTTLENECKS.build({"type": "pyramid", "bins": [1, 2, 4]}, filters=64)
    """

    def __init__(
        self, filters: int, bins: Sequence[int] = (1, 2, 4), kernel_regularizer: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.bins = _positive_ints("bins", bins)
        self.out = conv_bn_relu(filters, kernel_regularizer=self.kernel_regularizer)

    def build(self, input_shape: Any) -> None:
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(f"The pyramid bottleneck needs a static map size, got {tuple(input_shape)}.")
        self.grids = list(dict.fromkeys((min(b, height), min(b, width)) for b in self.bins))
        width_per_branch = max(self.filters // len(self.grids), 1)
        self.convs = [
            keras.layers.Conv2D(width_per_branch, 1, activation="relu", kernel_regularizer=self.kernel_regularizer)
            for _ in self.grids
        ]

    def call(self, x: Any, training: Any = None) -> Any:
        outs = [x] + [resize_to(conv(resize(x, grid)), x) for grid, conv in zip(self.grids, self.convs, strict=True)]
        return run_layers(self.out, ops.concatenate(outs, axis=-1), training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bins": self.bins}
