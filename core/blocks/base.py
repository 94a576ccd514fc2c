"""Shared helpers for block layers."""

from __future__ import annotations

from typing import Any

import keras


def conv_bn_relu(
    filters: int,
    kernel_size: int = 3,
    dilation_rate: int = 1,
    kernel_regularizer: Any = None,
    name: str | None = None,
) -> list[keras.layers.Layer]:
    """The three layers of a conv-BN-ReLU unit (bias off: BN supplies it)."""
    return [
        keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            use_bias=False,
            kernel_regularizer=kernel_regularizer,
            kernel_initializer="he_normal",
        ),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
    ]


def run_layers(layers: list[keras.layers.Layer], x: Any, training: Any = None) -> Any:
    for layer in layers:
        x = layer(x, training=training) if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout)) else layer(x)
    return x


def regularizer_config(reg: Any) -> Any:
    return keras.regularizers.serialize(reg) if reg is not None else None


class Block(keras.layers.Layer):
    """Base for blocks that take ``filters`` and an optional kernel regularizer.

    Subclasses create sublayers in ``__init__`` and implement ``call``; ``get_config``
    here covers the two shared arguments.
    """

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"filters must be a positive integer, got {filters!r}.")
        self.filters = int(filters)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_regularizer=regularizer_config(self.kernel_regularizer)
        )
        return config
