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
from ablate.registry import BRANCH, BRANCHES, DEFAULT_BRANCH, FUSIONS, MODELS, EntrySchema, Registry

# Keys of a global branch the spec leaves out: half resolution and one more down-sampling than
# the local default, so a 64x128 input reaches a 2x4 map (32x coarser) at the global bottleneck.
GLOBAL_DEFAULTS: dict[str, Any] = {"type": DEFAULT_BRANCH, "downsample": 2, "depth": BRANCH.scalars["depth"] + 1}
DEFAULT_FUSION: dict[str, Any] = {"type": "concat"}  # the fusion when the spec leaves it out: keeps both
WHERE = "model.global_branch"


@dataclass(frozen=True)
class GlobalBranch:
    """A branch that runs on the input average-pooled by ``downsample``."""

    branch: Branch
    downsample: int


# The global branch's kinds (one so far). Not a spec-level registry: it only appears nested
# under ``model.global_branch``, where the registry validates its keys and blocks (``downsample``
# an integer >= 1, by ``ablate.domains``); ``check`` and ``resolve`` take the task, like a
# ``ModelBuilder``'s ``check``, since the pooled size depends on its input.
@BRANCHES.register(DEFAULT_BRANCH)
class GlobalUNet:
    """A simplified U-Net on the image average-pooled by ``downsample`` (the global branch)."""

    @classmethod
    def entry_schema(cls) -> EntrySchema:
        """``BRANCH``'s scalars (depth 4) and slots, and ``downsample``."""
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        return BRANCH.entry_schema(summary, defaults={"depth": GLOBAL_DEFAULTS["depth"]},
                                   extra={"downsample": (GLOBAL_DEFAULTS["downsample"], None)})

    def check(self, config: Mapping[str, Any], task: Shaped) -> None:
        """Raises a SpecError naming the key when the branch cannot be built on ``task``'s pooled input."""
        height, width = pooled(config, task)
        check_branch(config, WHERE, height, width)

    def resolve(self, config: Mapping[str, Any], task: Shaped) -> GlobalBranch:
        """The branch to build on ``task``'s input, its depth checked at the pooled size."""
        height, width = pooled(config, task)
        check_depth(config["depth"], height, width, where=f"{WHERE}.depth")
        return GlobalBranch(make_branch(config, WHERE), config["downsample"])


def pooled(config: Mapping[str, Any], task: Shaped) -> tuple[int, int]:
    """The global branch's input size: ``task``'s pooled by ``downsample``, which must divide it."""
    downsample = config["downsample"]
    if task.height % downsample or task.width % downsample:
        raise SpecError(f"{WHERE}.downsample={downsample} must divide the {task.height}x{task.width} input "
                        f"(try 2 or 4).")
    return task.height // downsample, task.width // downsample


def global_config(global_branch: Mapping[str, Any] | None) -> dict[str, Any]:
    """The global branch's config: the spec's keys over ``GLOBAL_DEFAULTS`` (same type only)."""
    given = dict(global_branch or {})
    if given.get("type", GLOBAL_DEFAULTS["type"]) != GLOBAL_DEFAULTS["type"]:
        return given
    return {**GLOBAL_DEFAULTS, **given}


def _global(config: Mapping[str, Any]) -> tuple[GlobalUNet, dict[str, Any]]:
    """The global branch's builder and its config (defaults filled in)."""
    glob = global_config(config.get("global_branch"))
    return BRANCHES.get(BRANCHES.split(glob)[0])(), glob


def _fusion(config: Mapping[str, Any], local: Branch, **extra: Any) -> keras.layers.Layer:
    """The fusion the spec names (``DEFAULT_FUSION`` if none) at the local branch's full width."""
    return FUSIONS.build(config.get("fusion") or DEFAULT_FUSION, filters=local.width(0), **extra)


@MODELS.register("coarse_fine")
class CoarseFine(ModelBuilder):
    """Coarse-fine: a full-resolution U-Net and a down-sampled global U-Net, merged by a fusion."""

    extra: ClassVar[Mapping[str, tuple[Any, Registry | None]]] = {
        "global_branch": (None, BRANCHES), "fusion": (None, FUSIONS)}

    def check(self, config: Mapping[str, Any], task: Shaped) -> None:
        local = check_branch(config, "model", task.height, task.width)
        builder, glob = _global(config)
        builder.check(glob, task)
        with spec_errors("model.fusion"):
            _fusion(config, local, kernel_regularizer=None)

    def build(self, config: Mapping[str, Any], task: Shaped) -> keras.Model:
        check_depth(config.get("depth", BRANCH.scalars["depth"]), task.height, task.width)
        local = make_branch(config, "model")
        builder, glob_config = _global(config)
        glob = builder.resolve(glob_config, task)
        inputs = keras.Input(shape=task.input_shape, name="image")
        fine = run_branch(inputs, local, "l_")
        small = inputs
        if glob.downsample > 1:
            small = keras.layers.AveragePooling2D(glob.downsample, name="g_downsample")(inputs)
        coarse = run_branch(small, glob.branch, "g_")
        fused = _fusion(config, local, kernel_regularizer=local.reg.kernel(), name="fusion")([fine, coarse])
        return keras.Model(inputs, head(fused, task.num_classes), name="coarse_fine")
