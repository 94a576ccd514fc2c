"""Up-sampling used by decoder stages (x2)."""

from __future__ import annotations

from typing import Any

import keras

from ablate.blocks.base import Block
from ablate.registry import UPSAMPLERS


@UPSAMPLERS.register("transpose")
class TransposeUp(Block):
    """Learned 2x2 transposed convolution with stride 2."""

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.up = keras.layers.Conv2DTranspose(
            filters, 2, strides=2, padding="same", kernel_regularizer=self.kernel_regularizer
        )

    def call(self, x: Any) -> Any:
        return self.up(x)


@UPSAMPLERS.register("bilinear")
class BilinearUp(Block):
    """Bilinear 2x resize followed by a 3x3 convolution (no checkerboard artefacts)."""

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.resize = keras.layers.UpSampling2D(2, interpolation="bilinear")
        self.conv = keras.layers.Conv2D(
            filters, 3, padding="same", kernel_regularizer=self.kernel_regularizer
        )

    def call(self, x: Any) -> Any:
        return self.conv(self.resize(x))
