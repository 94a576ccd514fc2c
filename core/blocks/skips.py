"""Skip connections: how a decoder stage merges the encoder feature of its scale.

Every skip layer is called as ``skip([decoder, encoder])`` and returns one tensor. Channel
mismatches are handled inside the block (1x1 projection), never by the caller.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ablate.registry import SKIPS


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
        return ops.concatenate([dec, enc], axis=-1)


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


@SKIPS.register("none")
class NoSkip(keras.layers.Layer):
    """No skip: the decoder feature only (an encoder-decoder without U-Net shortcuts)."""

    def call(self, inputs: Any) -> Any:
        dec, _ = inputs
        return dec

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]


@SKIPS.register("attention")
class AttentionSkip(keras.layers.Layer):
    """Attention gate (Attention U-Net): the decoder feature gates the encoder feature, then concat.

    Both inputs are projected by 1x1 convolutions to ``inter_channels``; ``sigmoid(psi(relu(.)))``
    gives a one-channel map in [0, 1] that weights the encoder feature before it is concatenated
    with the decoder feature. Different channel counts are handled by the projections.

    Args:
        inter_channels: width of the gate's projections; None: half the encoder's channels.

    Example:
        >>> SKIPS.build({"type": "attention"})([decoder, encoder])
    """

    def __init__(self, inter_channels: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if inter_channels is not None and int(inter_channels) < 1:
            raise ValueError(f"inter_channels must be a positive integer or None, got {inter_channels!r}.")
        self.inter_channels = None if inter_channels is None else int(inter_channels)

    def build(self, input_shape: Any) -> None:
        dec_shape, enc_shape = input_shape
        inter = self.inter_channels or max(int(enc_shape[-1]) // 2, 1)
        self.theta = keras.layers.Conv2D(inter, 1, use_bias=False)  # encoder projection
        self.phi = keras.layers.Conv2D(inter, 1)  # gating (decoder) projection
        self.psi = keras.layers.Conv2D(1, 1, activation="sigmoid")
        self.theta.build(enc_shape)
        self.phi.build(dec_shape)
        self.psi.build(tuple(enc_shape[:-1]) + (inter,))

    def call(self, inputs: Any) -> Any:
        dec, enc = inputs
        attention = self.psi(ops.relu(self.theta(enc) + self.phi(dec)))
        return ops.concatenate([dec, enc * attention], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "inter_channels": self.inter_channels}
