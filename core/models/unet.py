"""U-Net builder driven by the spec, with an explicit encoder-to-decoder contract.

``encode`` returns features keyed by their down-sampling factor (1, 2, 4, ...); ``decode``
consumes only that mapping. Every block is looked up in its registry, so adding a block
means adding one registered class. A ``Branch`` holds one resolved encoder/bottleneck/decoder
(depth, widths, block configs, regularizer); the coarse-fine model runs two of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras

from ablate.blocks.regularizers import Regularizer
from ablate.errors import SpecError
from ablate.registry import BOTTLENECKS, CONV_BLOCKS, MODELS, REGULARIZERS, SKIPS, UPSAMPLERS, Registry
from ablate.task import INPUT_SHAPE, MAX_DEPTH, check_depth  # noqa: F401  (re-exported)

# Block parameters of a branch: validated recursively by the registry (unknown keys are named).
NESTED: dict[str, Registry] = {"conv": CONV_BLOCKS, "skip": SKIPS, "bottleneck": BOTTLENECKS,
                               "regularizer": REGULARIZERS, "upsample": UPSAMPLERS}


def stage_filters(filters: int, width_mult: float, level: int) -> int:
    return max(1, int(round(filters * width_mult * 2**level)))


@dataclass(frozen=True)
class Branch:
    """One resolved U-Net: what ``encode``, ``bottleneck`` and ``decode`` need.

    Example:
        >>> branch = make_branch(depth=4, filters=8, bottleneck={"type": "aspp"})
        >>> features = encode(inputs, branch)
    """

    depth: int
    filters: int
    width_mult: float
    conv: Mapping[str, Any]
    skip: Mapping[str, Any]
    bottleneck: Mapping[str, Any]
    upsample: Mapping[str, Any]
    reg: Regularizer

    def width(self, level: int) -> int:
        """Channels of the stage at ``level`` (0: full resolution, ``depth``: the bottleneck)."""
        return stage_filters(self.filters, self.width_mult, level)

    def block(self, registry: Registry, config: Mapping[str, Any], level: int, name: str) -> keras.layers.Layer:
        """Builds a block of the stage's width with the regularizer's kernel penalty and drop path."""
        extra: dict[str, Any] = {"filters": self.width(level), "kernel_regularizer": self.reg.kernel(), "name": name}
        if self.reg.drop_path and "drop_path" not in registry.split(config)[1] and takes(registry, config, "drop_path"):
            extra["drop_path"] = self.reg.drop_path  # a rate set in the block's own config wins
        return registry.build(config, **extra)


def takes(registry: Registry, config: Mapping[str, Any], arg: str) -> bool:
    """Whether the constructor of the block ``config`` names accepts ``arg``."""
    name, _ = registry.split(config)
    return arg in inspect.signature(registry.get(name)).parameters


def make_branch(depth: int = 3, filters: int = 16, width_mult: float = 1.0, conv: dict | None = None,
                skip: dict | None = None, bottleneck: dict | None = None, regularizer: dict | None = None,
                upsample: dict | None = None) -> Branch:
    """Resolves a branch's spec values (None: the plain U-Net default of that block)."""
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        raise ValueError(f"filters must be a positive integer, got {filters!r}.")
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise ValueError(f"width_mult must be a number > 0, got {width_mult!r}.")
    return Branch(
        depth=depth, filters=filters, width_mult=float(width_mult),
        conv=conv or {"type": "double"},
        skip=skip or {"type": "concat"},
        bottleneck=bottleneck or {"type": "plain"},
        upsample=upsample or {"type": "transpose"},
        reg=REGULARIZERS.build(regularizer or {"type": "none"}),
    )


def encode(x: Any, branch: Branch, name: str = "") -> dict[int, Any]:
    """Runs the encoder; returns ``{scale: feature}`` for scales 1, 2, ..., 2**depth."""
    features: dict[int, Any] = {}
    for level in range(branch.depth):
        x = branch.block(CONV_BLOCKS, branch.conv, level, f"{name}enc{level}")(x)
        x = _after_stage(branch.reg, x, f"{name}enc{level}")
        features[2**level] = x
        x = keras.layers.MaxPooling2D(2, name=f"{name}pool{level}")(x)
    features[2**branch.depth] = x
    return features


def bottleneck(features: dict[int, Any], branch: Branch, name: str = "") -> Any:
    """Runs the bottleneck on the coarsest encoder feature."""
    bottom = 2**branch.depth
    return branch.block(BOTTLENECKS, branch.bottleneck, branch.depth, f"{name}bottleneck")(features[bottom])


def decode(features: dict[int, Any], bottom: Any, branch: Branch, name: str = "") -> Any:
    """Runs the decoder from the bottleneck output up to scale 1, merging skips."""
    x = bottom
    for level in reversed(range(branch.depth)):
        x = branch.block(UPSAMPLERS, branch.upsample, level, f"{name}up{level}")(x)
        x = SKIPS.build(branch.skip, name=f"{name}skip{level}")([x, features[2**level]])
        x = branch.block(CONV_BLOCKS, branch.conv, level, f"{name}dec{level}")(x)
        x = _after_stage(branch.reg, x, f"{name}dec{level}")
    return x


def run_branch(x: Any, branch: Branch, name: str = "") -> Any:
    """Encoder, bottleneck and decoder: a full-resolution feature of ``branch.width(0)`` channels."""
    features = encode(x, branch, name)
    return decode(features, bottleneck(features, branch, name), branch, name)


def head(x: Any, num_classes: int) -> Any:
    """1x1 convolution to class probabilities (float32 even under mixed precision)."""
    return keras.layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="head")(x)


def _after_stage(reg: Regularizer, x: Any, name: str) -> Any:
    layer = reg.after_stage(f"{name}_reg")
    return x if layer is None else layer(x)


@MODELS.register("unet", nested=NESTED)
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
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> keras.Model:
    """U-Net: encoder, bottleneck, decoder with skips; softmax over the 5 classes."""
    check_depth(depth, input_shape[0], input_shape[1])
    branch = make_branch(depth, filters, width_mult, conv, skip, bottleneck, regularizer, upsample)
    inputs = keras.Input(shape=input_shape, name="image")
    return keras.Model(inputs, head(run_branch(inputs, branch), num_classes), name="unet")


def check_branch(config: Mapping[str, Any], where: str, height: int = 64, width: int = 128,
                 default_depth: int = 3) -> None:
    """Spec-time checks of one branch: depth, widths, and every block's constructor arguments.

    Instantiating the blocks (no weights are created) turns a bad value such as ``rates: [0]``
    into a SpecError naming the block when the spec is loaded, not a crash during the build.
    """
    check_depth(config.get("depth", default_depth), height, width, where=f"{where}.depth")
    with spec_errors(f"{where}.regularizer"):
        REGULARIZERS.build(config.get("regularizer") or {"type": "none"})
    with spec_errors(where):
        branch = make_branch(**{k: config[k] for k in ("depth", "filters", "width_mult", *NESTED) if k in config})
    for key, registry, level in (("conv", CONV_BLOCKS, 0), ("bottleneck", BOTTLENECKS, branch.depth),
                                 ("upsample", UPSAMPLERS, 0)):
        with spec_errors(f"{where}.{key}"):
            branch.block(registry, getattr(branch, key), level, f"check_{key}")
    with spec_errors(f"{where}.skip"):
        SKIPS.build(branch.skip)
    check_drop_path(branch, config.get("regularizer") or {"type": "none"}, where)


# The slots whose blocks may take the regularizer's drop-path rate (see ``Branch.block``).
DROP_PATH_SLOTS: dict[str, Registry] = {"conv": CONV_BLOCKS, "bottleneck": BOTTLENECKS, "upsample": UPSAMPLERS}


def check_drop_path(branch: Branch, regularizer: Mapping[str, Any], where: str) -> None:
    """Raises a SpecError if the regularizer's drop-path rate would reach no block of the branch.

    ``Branch.block`` passes the rate only to blocks whose constructor takes ``drop_path`` and
    whose own config does not set it; when none does, the regularizer is silently a no-op.
    """
    if not branch.reg.drop_path:
        return
    slots = {key: getattr(branch, key) for key in DROP_PATH_SLOTS}
    if any(takes(DROP_PATH_SLOTS[key], config, "drop_path") and "drop_path" not in config
           for key, config in slots.items()):
        return
    used = ", ".join(f"{key} '{DROP_PATH_SLOTS[key].split(config)[0]}'" for key, config in slots.items())
    takers = "; ".join(f"{key}: {', '.join(names)}" for key, registry in DROP_PATH_SLOTS.items()
                       if (names := [n for n in registry.names() if "drop_path" in registry.keys(n)]))
    raise SpecError(
        f"{where}.regularizer (type '{regularizer.get('type')}') has no effect: no block of this branch "
        f"receives its drop-path rate ({used}; a block's own drop_path wins). "
        f"Blocks that take drop_path: {takers}. Pick one of them or another regularizer."
    )


@contextmanager
def spec_errors(where: str) -> Iterator[None]:
    """Re-raises a constructor's error (ValueError, TypeError, SpecError) as a SpecError naming ``where``."""
    try:
        yield
    except (ValueError, TypeError) as e:  # SpecError is a ValueError
        raise SpecError(f"{where}: {e}") from None


def _check_unet(spec: Any) -> None:
    check_branch(spec.model, "model")


unet.check_spec = _check_unet  # type: ignore[attr-defined]
