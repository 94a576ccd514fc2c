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
from typing import Any

import keras

from ablate.errors import SpecError
from ablate.models.unet import (
    INPUT_SHAPE,
    NESTED,
    Branch,
    check_branch,
    check_depth,
    head,
    make_branch,
    run_branch,
    spec_errors,
)
from ablate.registry import BRANCHES, FUSIONS, MODELS

# The global branch's kinds (one so far). Not a spec-level registry: it only appears nested
# under ``model.global_branch``, where the registry validates its keys and blocks.

# Keys of a global branch the spec leaves out: half resolution and one more down-sampling than
# the local default, so a 64x128 input reaches a 2x4 map (32x coarser) at the global bottleneck.
GLOBAL_DEFAULTS: dict[str, Any] = {"type": "unet", "downsample": 2, "depth": 4}


@dataclass(frozen=True)
class GlobalBranch:
    """A branch that runs on the input average-pooled by ``downsample``."""

    branch: Branch
    downsample: int


@BRANCHES.register("unet", nested=NESTED)
def unet_branch(downsample: int = 2, depth: int = 4, filters: int = 16, width_mult: float = 1.0,
                conv: dict | None = None, skip: dict | None = None, bottleneck: dict | None = None,
                regularizer: dict | None = None, upsample: dict | None = None) -> GlobalBranch:
    """A simplified U-Net on the image average-pooled by ``downsample`` (the global branch)."""
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample!r}.")
    return GlobalBranch(make_branch(depth, filters, width_mult, conv, skip, bottleneck, regularizer, upsample),
                        downsample)


def global_config(global_branch: Mapping[str, Any] | None) -> dict[str, Any]:
    """The global branch's config: the spec's keys over ``GLOBAL_DEFAULTS`` (same type only)."""
    given = dict(global_branch or {})
    if given.get("type", GLOBAL_DEFAULTS["type"]) != GLOBAL_DEFAULTS["type"]:
        return given
    return {**GLOBAL_DEFAULTS, **given}


def check_downsample(downsample: int, height: int, width: int) -> None:
    """Raises a SpecError unless the global branch's pooling factor divides the input size."""
    if height % downsample or width % downsample:
        raise SpecError(
            f"model.global_branch.downsample={downsample} must divide the {height}x{width} input (try 2 or 4)."
        )


@MODELS.register("coarse_fine", nested={**NESTED, "global_branch": BRANCHES, "fusion": FUSIONS})
def coarse_fine(
    depth: int = 3,
    filters: int = 16,
    width_mult: float = 1.0,
    conv: dict | None = None,
    skip: dict | None = None,
    bottleneck: dict | None = None,
    regularizer: dict | None = None,
    upsample: dict | None = None,
    global_branch: dict | None = None,
    fusion: dict | None = None,
    num_classes: int = 5,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> keras.Model:
    """Coarse-fine: a full-resolution U-Net and a down-sampled global U-Net, merged by a fusion."""
    height, width = input_shape[0], input_shape[1]
    check_depth(depth, height, width)
    local = make_branch(depth, filters, width_mult, conv, skip, bottleneck, regularizer, upsample)
    glob = BRANCHES.build(global_config(global_branch))
    check_downsample(glob.downsample, height, width)
    check_depth(glob.branch.depth, height // glob.downsample, width // glob.downsample,
                where="model.global_branch.depth")
    inputs = keras.Input(shape=input_shape, name="image")
    fine = run_branch(inputs, local, "l_")
    small = inputs
    if glob.downsample > 1:
        small = keras.layers.AveragePooling2D(glob.downsample, name="g_downsample")(inputs)
    coarse = run_branch(small, glob.branch, "g_")
    fused = FUSIONS.build(fusion or {"type": "concat"}, filters=local.width(0),
                          kernel_regularizer=local.reg.kernel(), name="fusion")([fine, coarse])
    return keras.Model(inputs, head(fused, num_classes), name="coarse_fine")


def _check_coarse_fine(spec: Any) -> None:
    model = spec.model
    check_branch(model, "model")
    config = global_config(model.get("global_branch"))
    with spec_errors("model.global_branch"):
        downsample = BRANCHES.build({"type": config["type"], "downsample": config["downsample"]}).downsample
    height, width = INPUT_SHAPE[0], INPUT_SHAPE[1]
    check_downsample(downsample, height, width)
    check_branch(config, "model.global_branch", height // downsample, width // downsample, default_depth=4)
    with spec_errors("model.fusion"):
        FUSIONS.build(model.get("fusion") or {"type": "concat"}, filters=8, kernel_regularizer=None)


coarse_fine.check_spec = _check_coarse_fine  # type: ignore[attr-defined]
