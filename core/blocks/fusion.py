"""Fusions: how the coarse-fine model merges its local (fine) and global (coarse) branches.

Every fusion is called as ``fusion([local, global_])`` where ``local`` is at full resolution and
``global_`` is at a coarser scale with any channel count; it returns ``filters`` channels at the
local branch's resolution. Scale and channel mismatches are handled inside the block.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ablate.blocks.base import Block, conv_bn_relu, resize_to, run_layers
from ablate.registry import FUSIONS


class Fusion(Block):
    """Base: 1x1 projections of both branches to ``filters`` channels."""

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.proj_local = keras.layers.Conv2D(filters, 1, kernel_regularizer=self.kernel_regularizer)
        self.proj_global = keras.layers.Conv2D(filters, 1, kernel_regularizer=self.kernel_regularizer)


@FUSIONS.register("concat")
class ConcatFusion(Block):
    """Upsample the global feature, concatenate with the local one, mix with a 1x1 conv-BN-ReLU.

    Example:
        >>> FUSIONS.build({"type": "concat"}, filters=16)([local, global_])
    """

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.mix = conv_bn_relu(filters, 1, kernel_regularizer=self.kernel_regularizer)

    def call(self, inputs: Any, training: Any = None) -> Any:
        local, global_ = inputs
        return run_layers(self.mix, ops.concatenate([local, resize_to(global_, local)], axis=-1), training)


@FUSIONS.register("add")
class AddFusion(Fusion):
    """Project both branches to ``filters`` channels (1x1), upsample the global one and add.

    Example:
        >>> FUSIONS.build({"type": "add"}, filters=16)([local, global_])
    """

    def call(self, inputs: Any) -> Any:
        local, global_ = inputs
        return ops.relu(self.proj_local(local) + resize_to(self.proj_global(global_), local))


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """Gated attention fusion: a learned per-pixel, per-channel sigmoid gate weights the branches.

    ``out = g * local + (1 - g) * global_`` with both branches projected to ``filters`` channels
    and ``g = sigmoid(conv3x3([local, global_]))`` computed at full resolution.

    Example:
        >>> FUSIONS.build({"type": "gated"}, filters=16)([local, global_])
    """

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        self.gate = keras.layers.Conv2D(filters, 3, padding="same", activation="sigmoid",
                                        kernel_regularizer=self.kernel_regularizer)

    def call(self, inputs: Any) -> Any:
        local, global_ = inputs
        local = self.proj_local(local)
        global_ = resize_to(self.proj_global(global_), local)
        g = self.gate(ops.concatenate([local, global_], axis=-1))
        return ops.relu(g * local + (1.0 - g) * global_)


@FUSIONS.register("cross_scale")
class CrossScaleFusion(Block):
    """Cross-scale fusion: each branch resampled to the other's scale and mixed, then fused at full res.

    The local feature is average-pooled to the global scale and mixed into the global branch
    (3x3 conv-BN-ReLU); the global feature is upsampled to full resolution and mixed into the
    local branch (3x3 conv-BN-ReLU); the two results are fused at full resolution (1x1 conv-BN-ReLU),
    as in HRNet's exchange units.

    Example:
        >>> FUSIONS.build({"type": "cross_scale"}, filters=16)([local, global_])
    """

    def __init__(self, filters: int, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        reg = self.kernel_regularizer
        self.mix_global = conv_bn_relu(filters, 3, kernel_regularizer=reg)
        self.mix_local = conv_bn_relu(filters, 3, kernel_regularizer=reg)
        self.fuse = conv_bn_relu(filters, 1, kernel_regularizer=reg)

    def call(self, inputs: Any, training: Any = None) -> Any:
        local, global_ = inputs
        coarse = run_layers(self.mix_global, ops.concatenate([global_, resize_to(local, global_)], axis=-1), training)
        fine = run_layers(self.mix_local, ops.concatenate([local, resize_to(global_, local)], axis=-1), training)
        return run_layers(self.fuse, ops.concatenate([fine, resize_to(coarse, fine)], axis=-1), training)
