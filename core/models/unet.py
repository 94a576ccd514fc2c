"""U-Net builder driven by the spec, with an explicit encoder-to-decoder contract.

``encode`` returns features keyed by their down-sampling factor (1, 2, 4, ...); ``decode``
consumes only that mapping. A ``Branch`` holds one resolved encoder/bottleneck/decoder (depth,
widths, one block config per slot of ``ablate.registry.BRANCH``, the regularizer); the slots'
roles say where each block goes, so adding a kind of slot is one ``Slot`` line plus its blocks.
The coarse-fine model runs two branches.

A model builder is a registered ``ModelBuilder`` class: ``entry_schema()`` declares the keys a
spec may set (the registry validates them), ``check(config, task)`` runs the checks that need
the blocks themselves (``ablate.spec.check_buildable``), ``build(config, task)`` makes the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import keras

from ablate.blocks.regularizers import Regularizer
from ablate.errors import SpecError
from ablate.registry import (
    AFTER_STAGE,
    BOTTOM,
    BRANCH,
    MERGE,
    MODELS,
    POLICY,
    STAGE,
    UP,
    EntrySchema,
    Registry,
    Slot,
)
from ablate.task import MAX_DEPTH, check_depth  # noqa: F401  (re-exported)


class Shaped(Protocol):
    """What a builder needs of the task (``ablate.task.Task`` has it): input size and class count."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def input_shape(self) -> tuple[int, int, int]: ...
    @property
    def num_classes(self) -> int: ...


@dataclass(frozen=True)
class Target:
    """An input shape and a class count: what ``build_model`` needs of a task, for callers without one."""

    num_classes: int
    input_shape: tuple[int, int, int]

    @property
    def height(self) -> int:
        return self.input_shape[0]

    @property
    def width(self) -> int:
        return self.input_shape[1]


def stage_filters(filters: int, width_mult: float, level: int) -> int:
    return max(1, int(round(filters * width_mult * 2**level)))


@dataclass(frozen=True)
class Branch:
    """One resolved U-Net: what ``encode``, ``bottleneck`` and ``decode`` need.

    Example:
        >>> branch = make_branch({"depth": 4, "filters": 8, "bottleneck": {"type": "aspp"}})
        >>> features = encode(inputs, branch)
    """

    depth: int
    filters: int
    width_mult: float
    blocks: Mapping[str, Any]  # slot key -> block config (None: the slot holds no block)
    reg: Regularizer

    def width(self, level: int) -> int:
        """Channels of the stage at ``level`` (0: full resolution, ``depth``: the bottleneck)."""
        return stage_filters(self.filters, self.width_mult, level)

    def config(self, role: str) -> Any:
        """The block config of the single slot of ``role``."""
        return self.blocks[BRANCH.at(role)[0].key]

    def block(self, slot: Slot, level: int, name: str) -> keras.layers.Layer:
        """Builds the slot's block at the stage's width with the regularizer's kernel penalty and drop path
        (each only where the slot's registry supplies it, or the block's constructor takes it)."""
        registry, config = slot.registry, self.blocks[slot.key]
        extra: dict[str, Any] = {"name": name}
        if "filters" in registry.supplied:
            extra["filters"] = self.width(level)
        if "kernel_regularizer" in registry.supplied:
            extra["kernel_regularizer"] = self.reg.kernel()
        if self.reg.drop_path and "drop_path" not in registry.split(config)[1] and registry.takes(config, "drop_path"):
            extra["drop_path"] = self.reg.drop_path  # a rate set in the block's own config wins
        return registry.build(config, **extra)

    def role_block(self, role: str, level: int, name: str) -> keras.layers.Layer:
        return self.block(BRANCH.at(role)[0], level, name)

    def stage(self, x: Any, level: int, name: str) -> Any:
        """One encoder or decoder stage: its block, the after-stage slots' layers, the regularizer's."""
        x = self.role_block(STAGE, level, name)(x)
        for slot in BRANCH.at(AFTER_STAGE):
            if self.blocks.get(slot.key) is not None:
                x = self.block(slot, level, f"{name}_{slot.key}")(x)
        layer = self.reg.after_stage(f"{name}_reg")
        return x if layer is None else layer(x)


def make_branch(config: Mapping[str, Any] | None = None, where: str = "model") -> Branch:
    """Resolves a branch section (``model`` or ``model.global_branch``): the scalars of ``BRANCH`` (a
    scalar left out: its default there) and every slot (a slot left out: its default block).

    The registry has checked the scalars' values when the spec was validated (``ablate.domains``).
    """
    config = config or {}
    depth, filters, width_mult = (config.get(key, BRANCH.scalars[key]) for key in ("depth", "filters", "width_mult"))
    blocks = {slot.key: slot.resolve(config, where) for slot in BRANCH.slots}
    policy = BRANCH.at(POLICY)[0]
    with spec_errors(f"{where}.{policy.key}"):
        reg = policy.registry.build(blocks[policy.key])
    return Branch(depth=depth, filters=filters, width_mult=float(width_mult), blocks=blocks, reg=reg)


def encode(x: Any, branch: Branch, name: str = "") -> dict[int, Any]:
    """Runs the encoder; returns ``{scale: feature}`` for scales 1, 2, ..., 2**depth."""
    features: dict[int, Any] = {}
    for level in range(branch.depth):
        x = branch.stage(x, level, f"{name}enc{level}")
        features[2**level] = x
        x = keras.layers.MaxPooling2D(2, name=f"{name}pool{level}")(x)
    features[2**branch.depth] = x
    return features


def bottleneck(features: dict[int, Any], branch: Branch, name: str = "") -> Any:
    """Runs the bottleneck on the coarsest encoder feature."""
    return branch.role_block(BOTTOM, branch.depth, f"{name}bottleneck")(features[2**branch.depth])


def decode(features: dict[int, Any], bottom: Any, branch: Branch, name: str = "") -> Any:
    """Runs the decoder from the bottleneck output up to scale 1, merging skips."""
    x = bottom
    for level in reversed(range(branch.depth)):
        x = branch.role_block(UP, level, f"{name}up{level}")(x)
        x = branch.role_block(MERGE, level, f"{name}skip{level}")([x, features[2**level]])
        x = branch.stage(x, level, f"{name}dec{level}")
    return x


def run_branch(x: Any, branch: Branch, name: str = "") -> Any:
    """Encoder, bottleneck and decoder: a full-resolution feature of ``branch.width(0)`` channels."""
    features = encode(x, branch, name)
    return decode(features, bottleneck(features, branch, name), branch, name)


def head(x: Any, num_classes: int) -> Any:
    """1x1 convolution to class probabilities (float32 even under mixed precision)."""
    return keras.layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="head")(x)


def check_branch(config: Mapping[str, Any], where: str, height: int, width: int) -> Branch:
    """Spec-time checks of one branch: depth against its input size, widths, and every slot's block.

    Instantiating the blocks (no weights are created) turns a bad value such as ``rates: [0]``
    into a SpecError naming the slot when the spec is checked, not a crash during the build.
    """
    check_depth(config.get("depth", BRANCH.scalars["depth"]), height, width, where=f"{where}.depth")
    branch = make_branch(config, where)
    for slot in BRANCH.slots:
        if slot.role != POLICY and branch.blocks[slot.key] is not None:
            with spec_errors(f"{where}.{slot.key}"):
                branch.block(slot, branch.depth if slot.role == BOTTOM else 0, f"check_{slot.key}")
    check_drop_path(branch, where)
    return branch


def check_drop_path(branch: Branch, where: str) -> None:
    """Raises a SpecError if the regularizer's drop-path rate would reach no block of the branch.

    ``Branch.block`` passes the rate only to blocks whose constructor takes ``drop_path`` and
    whose own config does not set it; when none does, the regularizer is silently a no-op.
    """
    if not branch.reg.drop_path:
        return
    takers = {s.key: names for s in BRANCH.slots  # the slots some block of which takes a drop-path rate
              if (names := [n for n in s.registry.names() if "drop_path" in s.registry.keys(n)])}
    slots = [s for s in BRANCH.slots  # the stage-width slots, and any other that has a taker
             if (s.key in takers or "filters" in s.registry.supplied) and branch.blocks[s.key] is not None]
    if any(s.registry.takes(branch.blocks[s.key], "drop_path") and "drop_path" not in s.registry.split(
            branch.blocks[s.key])[1] for s in slots):
        return
    used = ", ".join(f"{s.key} '{s.registry.split(branch.blocks[s.key])[0]}'" for s in slots)
    listed = "; ".join(f"{key}: {', '.join(names)}" for key, names in takers.items())
    policy = BRANCH.at(POLICY)[0]
    raise SpecError(
        f"{where}.{policy.key} (type '{policy.registry.split(branch.blocks[policy.key])[0]}') has no effect: "
        f"no block of this branch receives its drop-path rate ({used}; a block's own drop_path wins). "
        f"Blocks that take drop_path: {listed}. Pick one of them or another regularizer."
    )


@contextmanager
def spec_errors(where: str) -> Iterator[None]:
    """Re-raises a constructor's error (ValueError, TypeError) as a SpecError naming ``where``; a SpecError
    that already names its place passes unchanged."""
    try:
        yield
    except SpecError:
        raise
    except (ValueError, TypeError) as e:
        raise SpecError(f"{where}: {e}") from None


class ModelBuilder:
    """A registered model builder: the keys it takes, its spec-time checks, and the build.

    Subclasses set ``extra`` (their own keys beyond the branch's: ``key -> (default, registry of its
    blocks or None)``) and implement ``check`` and ``build``; the branch's scalars default to
    ``BRANCH.scalars``.
    """

    extra: ClassVar[Mapping[str, tuple[Any, Registry | None]]] = {}

    @classmethod
    def entry_schema(cls) -> EntrySchema:
        """What a spec may set on this model: ``BRANCH``'s scalars and slots, and ``extra``."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return BRANCH.entry_schema(doc[0] if doc else "", extra=cls.extra)

    def check(self, config: Mapping[str, Any], task: Shaped) -> None:
        """Raises a SpecError naming the key when ``config`` cannot be built for ``task``."""
        raise NotImplementedError

    def build(self, config: Mapping[str, Any], task: Shaped) -> keras.Model:
        raise NotImplementedError


@MODELS.register("unet")
class UNet(ModelBuilder):
    """U-Net: encoder, bottleneck, decoder with skips; softmax over the task's classes."""

    def check(self, config: Mapping[str, Any], task: Shaped) -> None:
        check_branch(config, "model", task.height, task.width)

    def build(self, config: Mapping[str, Any], task: Shaped) -> keras.Model:
        check_depth(config.get("depth", BRANCH.scalars["depth"]), task.height, task.width)
        branch = make_branch(config, "model")
        inputs = keras.Input(shape=task.input_shape, name="image")
        return keras.Model(inputs, head(run_branch(inputs, branch), task.num_classes), name="unet")
