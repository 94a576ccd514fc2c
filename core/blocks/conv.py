"""Convolution blocks for encoder and decoder stages.

Every block takes ``filters`` and ``kernel_regularizer`` from the model builder. Blocks whose
constructor has a ``drop_path`` argument also receive the regularizer's stochastic-depth rate
(see ``ablate.blocks.regularizers``); a rate set in the block's own config wins. A block takes only
arguments it uses: one without a residual branch has no ``drop_path``, so a spec setting it fails.
"""

from __future__ import annotations

from typing import Any

import keras

from ablate.blocks.base import Block, DropPath, SqueezeExcite, conv_bn_relu, run_layers
from ablate.registry import CONV_BLOCKS


@CONV_BLOCKS.register("double")
class DoubleConv(Block):
    """Two conv-BN-ReLU units: the classic U-Net stage.

    It has no residual branch (dropping the whole stage would cut the network), so it takes no
    ``drop_path``: the builder passes the stochastic-depth rate only to blocks that take it.

    Example:
        >>> CONV_BLOCKS.build({"type": "double"}, filters=16)
    """

    def __init__(self, filters: int, kernel_size: int = 3, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.kernel_size = int(kernel_size)
        reg = self.kernel_regularizer
        self.units = conv_bn_relu(filters, kernel_size, kernel_regularizer=reg) + conv_bn_relu(
            filters, kernel_size, kernel_regularizer=reg
        )

    def call(self, x: Any, training: Any = None) -> Any:
        return run_layers(self.units, x, training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": self.kernel_size}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DoubleConv:
        # Models saved while this block still took (and ignored) drop_path reload unchanged.
        return super().from_config({k: v for k, v in config.items() if k != "drop_path"})


@CONV_BLOCKS.register("residual")
class ResidualConv(Block):
    """Residual stage: conv-BN-ReLU, conv-BN, plus a 1x1-projected shortcut, then ReLU.

    With ``drop_path > 0`` (stochastic depth) the residual branch is dropped per sample during
    training, leaving only the shortcut.

    Example:
        >>> CONV_BLOCKS.build({"type": "residual"}, filters=16, drop_path=0.1)
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        drop_path: float = 0.0,
        kernel_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.kernel_size = int(kernel_size)
        self.drop_path = float(drop_path)
        reg = self.kernel_regularizer
        self.branch = conv_bn_relu(filters, kernel_size, kernel_regularizer=reg) + conv_bn_relu(
            filters, kernel_size, kernel_regularizer=reg, relu=False
        )
        self.shortcut = conv_bn_relu(filters, 1, kernel_regularizer=reg, relu=False)
        self.drop = DropPath(self.drop_path)
        self.relu = keras.layers.ReLU()

    def call(self, x: Any, training: Any = None) -> Any:
        residual = self.drop(run_layers(self.branch, x, training), training=training)
        return self.relu(run_layers(self.shortcut, x, training) + residual)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": self.kernel_size, "drop_path": self.drop_path}


@CONV_BLOCKS.register("se")
class SEConv(Block):
    """Double conv followed by squeeze-excitation channel recalibration.

    The recalibration is treated as a residual refinement ``y + (se(y) - y)``: with
    ``drop_path > 0`` it is skipped per sample during training (stochastic depth on the SE branch).

    Example:
        >>> CONV_BLOCKS.build({"type": "se", "se_ratio": 4}, filters=16)
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        se_ratio: int = 8,
        drop_path: float = 0.0,
        kernel_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.kernel_size = int(kernel_size)
        self.se_ratio = int(se_ratio)
        self.drop_path = float(drop_path)
        reg = self.kernel_regularizer
        self.units = conv_bn_relu(filters, kernel_size, kernel_regularizer=reg) + conv_bn_relu(
            filters, kernel_size, kernel_regularizer=reg
        )
        self.se = SqueezeExcite(self.se_ratio)
        self.drop = DropPath(self.drop_path) if self.drop_path > 0 else None  # unused layers stay unbuilt

    def call(self, x: Any, training: Any = None) -> Any:
        y = run_layers(self.units, x, training)
        if self.drop is None:
            return self.se(y)
        return y + self.drop(self.se(y) - y, training=training)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "se_ratio": self.se_ratio,
            "drop_path": self.drop_path,
        }
