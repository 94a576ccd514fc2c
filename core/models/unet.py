"""U-Net builder driven by the spec, with an explicit encoder-to-decoder contract.

``encode`` returns features keyed by their down-sampling factor (1, 2, 4, ...); ``decode``
consumes only that mapping. Every block is looked up in its registry, so adding a block
means adding one registered class.
"""

from __future__ import annotations

from typing import Any

import keras

from core.errors import SpecError
from core.registry import BOTTLENECKS, CONV_BLOCKS, MODELS, REGULARIZERS, SKIPS, UPSAMPLERS

MAX_DEPTH = 5  # 64 / 2**5 = 2 rows at the bottleneck: the most a 64x128 input allows


def check_depth(depth: int, height: int = 64, width: int = 128) -> None:
    if not 1 <= depth <= MAX_DEPTH or height % 2**depth or width % 2**depth:
        raise SpecError(
            f"model.depth={depth} is not possible for a {height}x{width} input; expected 1-{MAX_DEPTH} "
            f"down-samplings."
        )


def stage_filters(filters: int, width_mult: float, level: int) -> int:
    return max(1, int(round(filters * width_mult * 2**level)))


def encode(x: Any, depth: int, filters: int, width_mult: float, conv: dict, reg: Any, name: str) -> dict[int, Any]:
    """Runs the encoder; returns ``{scale: feature}`` for scales 1, 2, ..., 2**depth."""
    features: dict[int, Any] = {}
    for level in range(depth):
        x = CONV_BLOCKS.build(conv, filters=stage_filters(filters, width_mult, level),
                              kernel_regularizer=reg.kernel(), name=f"{name}enc{level}")(x)
        x = _after_stage(reg, x, f"{name}enc{level}")
        features[2**level] = x
        x = keras.layers.MaxPooling2D(2, name=f"{name}pool{level}")(x)
    features[2**depth] = x
    return features


def decode(features: dict[int, Any], bottom: Any, depth: int, filters: int, width_mult: float,
           conv: dict, skip: dict, upsample: dict, reg: Any, name: str) -> Any:
    """Runs the decoder from the bottleneck output up to scale 1, merging skips."""
    x = bottom
    for level in reversed(range(depth)):
        f = stage_filters(filters, width_mult, level)
        x = UPSAMPLERS.build(upsample, filters=f, kernel_regularizer=reg.kernel(), name=f"{name}up{level}")(x)
        x = SKIPS.build(skip, name=f"{name}skip{level}")([x, features[2**level]])
        x = CONV_BLOCKS.build(conv, filters=f, kernel_regularizer=reg.kernel(), name=f"{name}dec{level}")(x)
        x = _after_stage(reg, x, f"{name}dec{level}")
    return x


def _after_stage(reg: Any, x: Any, name: str) -> Any:
    layer = reg.after_stage(f"{name}_reg")
    return x if layer is None else layer(x)


def defaults(conv: dict | None, skip: dict | None, bottleneck: dict | None,
             regularizer: dict | None, upsample: dict | None) -> tuple[dict, dict, dict, Any, dict]:
    return (
        conv or {"type": "double"},
        skip or {"type": "concat"},
        bottleneck or {"type": "plain"},
        REGULARIZERS.build(regularizer or {"type": "none"}),
        upsample or {"type": "transpose"},
    )


_NESTED = {"conv": CONV_BLOCKS, "skip": SKIPS, "bottleneck": BOTTLENECKS,
           "regularizer": REGULARIZERS, "upsample": UPSAMPLERS}


@MODELS.register("unet", nested=_NESTED)
def unet(
    depth: int = 3,
    filters: int = 16,
    width_mult: float = 1.0,
    conv: dict | None = None,
    skip: dict | None = None,
    bottleneck: dict | None = None,
    regularizer: dict | None = None,
    upsample: dict | None = None,
    num_classes: int = 5,
    input_shape: tuple[int, int, int] = (64, 128, 1),
) -> keras.Model:
    """U-Net: encoder, bottleneck, decoder with skips; softmax over the 5 classes."""
    check_depth(depth, input_shape[0], input_shape[1])
    conv, skip, bottleneck, reg, upsample = defaults(conv, skip, bottleneck, regularizer, upsample)
    inputs = keras.Input(shape=input_shape, name="image")
    features = encode(inputs, depth, filters, width_mult, conv, reg, "")
    bottom = BOTTLENECKS.build(bottleneck, filters=stage_filters(filters, width_mult, depth),
                               kernel_regularizer=reg.kernel(), name="bottleneck")(features[2**depth])
    x = decode(features, bottom, depth, filters, width_mult, conv, skip, upsample, reg, "")
    outputs = keras.layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="unet")


def _check_unet(spec: Any) -> None:
    check_depth(int(spec.model.get("depth", 3)))


unet.check_spec = _check_unet  # type: ignore[attr-defined]
