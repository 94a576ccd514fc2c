"""Coarse-fine dual-branch model (the seed report, section 6).

A local branch (the U-Net of ``ablate.models.unet`` at full resolution, configured by the same
flat keys as ``unet``) sees fine detail; a global branch (a U-Net on the image average-pooled by
``downsample``, with more down-sampling and its own blocks, e.g. an ASPP or transformer
bottleneck and stochastic depth) sees wide context. A registered fusion merges the two at full
resolution before the softmax head. Both branches use the ``{scale: feature}`` contract of
``encode``/``decode``.

Example spec::

    model:
      type: coarse_fine
      depth: 3
      filters: 16
      global_branch: {type: unet, downsample: 2, depth: 4, bottleneck: {type: transformer}}
      fusion: {type: cross_scale}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import keras

from ablate.errors import SpecError
from ablate.models.unet import (
    Branch,
    ModelBuilder,
    Shaped,
    check_branch,
    check_depth,
    head,
    make_branch,
    run_branch,
    spec_errors,
)
from ablate.registry import BRANCH, BRANCHES, FUSIONS, MODELS, EntrySchema, Registry

# Keys of a global branch the spec leaves out: half resolution and one more down-sampling than
# the local default, so a 64x128 input reaches a 2x4 map (32x coarser) at the global bottleneck.
GLOBAL_DEFAULTS: dict[str, Any] = {"type": "unet", "downsample": 2, "depth": 4}
WHERE = "model.global_branch"


@dataclass(frozen=True)
class GlobalBranch:
    """A branch that runs on the input average-pooled by ``downsample``."""

    branch: Branch
    downsample: int


# The global branch's kinds (one so far). Not a spec-level registry: it only appears nested
# under ``model.global_branch``, where the registry validates its keys and blocks.
@BRANCHES.register("unet")
class GlobalUNet:
    """A simplified U-Net on the image average-pooled by ``downsample`` (the global branch)."""

    @classmethod
    def entry_schema(cls) -> EntrySchema:
        """``BRANCH``'s scalars (depth 4) and slots, and ``downsample``."""
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        return BRANCH.entry_schema(summary, defaults={"depth": GLOBAL_DEFAULTS["depth"]},
                                   extra={"downsample": (GLOBAL_DEFAULTS["downsample"], None)})

    @staticmethod
    def downsample(config: Mapping[str, Any], height: int, width: int) -> int:
        """The pooling factor, checked: a positive integer that divides the input size."""
        downsample = config["downsample"]
        if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
            raise SpecError(f"{WHERE}.downsample: expected a positive integer, got {downsample!r}.")
        check_downsample(downsample, height, width)
        return downsample

    def check(self, config: Mapping[str, Any], height: int, width: int) -> None:
        downsample = self.downsample(config, height, width)
        check_branch(config, WHERE, height // downsample, width // downsample, GLOBAL_DEFAULTS["depth"])

    def resolve(self, config: Mapping[str, Any], height: int, width: int) -> GlobalBranch:
        downsample = self.downsample(config, height, width)
        check_depth(config["depth"], height // downsample, width // downsample, where=f"{WHERE}.depth")
        return GlobalBranch(make_branch(config, WHERE, GLOBAL_DEFAULTS["depth"]), downsample)


def global_config(global_branch: Mapping[str, Any] | None) -> dict[str, Any]:
    """The global branch's config: the spec's keys over ``GLOBAL_DEFAULTS`` (same type only)."""
    given = dict(global_branch or {})
    if given.get("type", GLOBAL_DEFAULTS["type"]) != GLOBAL_DEFAULTS["type"]:
        return given
    return {**GLOBAL_DEFAULTS, **given}


def check_downsample(downsample: int, height: int, width: int) -> None:
    """Raises a SpecError unless the global branch's pooling factor divides the input size."""
    if height % downsample or width % downsample:
        raise SpecError(f"{WHERE}.downsample={downsample} must divide the {height}x{width} input (try 2 or 4).")


def _global(config: Mapping[str, Any]) -> tuple[GlobalUNet, dict[str, Any]]:
    """The global branch's builder and its config (defaults filled in)."""
    glob = global_config(config.get("global_branch"))
    return BRANCHES.get(BRANCHES.split(glob)[0])(), glob


@MODELS.register("coarse_fine")
class CoarseFine(ModelBuilder):
    """Coarse-fine: a full-resolution U-Net and a down-sampled global U-Net, merged by a fusion."""

    extra: ClassVar[Mapping[str, tuple[Any, Registry | None]]] = {
        "global_branch": (None, BRANCHES), "fusion": (None, FUSIONS)}

    def check(self, config: Mapping[str, Any], task: Shaped) -> None:
        local = check_branch(config, "model", task.height, task.width, self.default_depth)
        builder, glob = _global(config)
        builder.check(glob, task.height, task.width)
        with spec_errors("model.fusion"):
            FUSIONS.build(config.get("fusion") or {"type": "concat"}, filters=local.width(0),
                          kernel_regularizer=None)

    def build(self, config: Mapping[str, Any], task: Shaped) -> keras.Model:
        height, width = task.height, task.width
        check_depth(config.get("depth", self.default_depth), height, width)
        local = make_branch(config, "model", self.default_depth)
        builder, glob_config = _global(config)
        glob = builder.resolve(glob_config, height, width)
        inputs = keras.Input(shape=task.input_shape, name="image")
        fine = run_branch(inputs, local, "l_")
        small = inputs
        if glob.downsample > 1:
            small = keras.layers.AveragePooling2D(glob.downsample, name="g_downsample")(inputs)
        coarse = run_branch(small, glob.branch, "g_")
        fused = FUSIONS.build(config.get("fusion") or {"type": "concat"}, filters=local.width(0),
                              kernel_regularizer=local.reg.kernel(), name="fusion")([fine, coarse])
        return keras.Model(inputs, head(fused, task.num_classes), name="coarse_fine")
