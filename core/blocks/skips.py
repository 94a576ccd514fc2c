"""Skip connections: how a decoder stage merges the encoder feature of its scale.

Every skip layer is called as ``skip([decoder, encoder])`` and returns one tensor. Channel
mismatches are handled inside the block (1x1 projection), never by the caller.
"""

from __future__ import annotations

from typing import Any

import keras

from core.registry import SKIPS


class Skip(keras.layers.Layer):
    """Base: projects the encoder feature to the decoder's channels when they differ."""

    def build(self, input_shape: Any) -> None:
        dec_shape, enc_shape = input_shape
        self.proj = None
        if enc_shape[-1] != dec_shape[-1]:
            self.proj = keras.layers.Conv2D(dec_shape[-1], 1, padding="same")
            self.proj.build(enc_shape)

    def project(self, enc: Any) -> Any:
        return self.proj(enc) if self.proj is not None else enc


@SKIPS.register("concat")
class ConcatSkip(keras.layers.Layer):
    """Concatenate encoder and decoder features along channels (U-Net)."""

    def call(self, inputs: Any) -> Any:
        dec, enc = inputs
        return keras.ops.concatenate([dec, enc], axis=-1)


@SKIPS.register("add")
class AddSkip(Skip):
    """Add the (projected) encoder feature to the decoder feature (LinkNet-style)."""

    def call(self, inputs: Any) -> Any:
        dec, enc = inputs
        return dec + self.project(enc)


@SKIPS.register("multiply")
class MultiplySkip(Skip):
    """Multiply decoder and (projected) encoder features element-wise."""

    def call(self, inputs: Any) -> Any:
        dec, enc = inputs
        return dec * self.project(enc)
