"""The model schema (``ablate.registry.BRANCH``) drives the builder, the validator and ``ablate blocks``.

Every registered block of every slot, every fusion and every model preset builds under the Mars
task and a second task (RGB, 48x96, 7 classes) with tiny widths, giving (N, H, W, num_classes)
probabilities; a slot declared in a test is validated, built after every stage and listed; and
depth that does not fit the task's input is refused with the figures.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from ablate import load_all
from ablate.cli.main import main
from ablate.errors import SpecError
from ablate.models import build_model
from ablate.registry import AFTER_STAGE, BRANCH, FUSIONS, MODELS, Registry, Slot, model_slots, slot_choices
from ablate.spec import check_buildable, load_spec
from ablate.task import MARS, Task, max_depth

load_all()  # registers every block

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "ablations/presets").glob("*.yaml"))
RGB = Task(height=48, width=96, channels=3, classes=["void", "grass", "road", "water", "building", "tree", "car"],
           ignore_label=255)
TASKS = {"mars": MARS, "rgb48x96": RGB}
TINY = {"depth": 2, "filters": 4}
TINY_GLOBAL = {"type": "unet", "downsample": 2, "depth": 2, "filters": 4}


def model_for(slot: Slot, name: str) -> dict[str, Any]:
    """A tiny U-Net with block ``name`` in ``slot`` (residual stages, so that drop path has a taker)."""
    return {"type": "unet", **TINY, "conv": {"type": "residual"}, slot.key: {"type": name}}


def check_output(model_spec: dict[str, Any], task: Task) -> None:
    """Checks the spec for ``task`` (as every training command does), builds it and runs two images."""
    check_buildable(load_spec({"model": model_spec}), task)
    keras.utils.set_random_seed(0)
    model = build_model(model_spec, task)
    x = np.random.default_rng(0).random((2, *task.input_shape), dtype=np.float32)
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    assert probs.shape == (2, task.height, task.width, task.num_classes)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)


CASES = [(slot.key, name) for slot in BRANCH.slots for name in slot.choices()]


@pytest.mark.parametrize("task", TASKS, ids=list(TASKS))
@pytest.mark.parametrize(("key", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_every_block_of_every_slot_builds_for_the_task(key: str, name: str, task: str) -> None:
    check_output(model_for(BRANCH.slot(key), name), TASKS[task])


@pytest.mark.parametrize("task", TASKS, ids=list(TASKS))
@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_every_fusion_builds_for_the_task(fusion: str, task: str) -> None:
    check_output({"type": "coarse_fine", **TINY, "global_branch": TINY_GLOBAL, "fusion": {"type": fusion}},
                 TASKS[task])


def fitted(model: dict[str, Any], task: Task) -> dict[str, Any]:
    """A preset's model at tiny widths, its depths cut to what the task's input allows."""
    out = {**model, "filters": 4, "depth": min(model.get("depth", 3), max_depth(task.height, task.width))}
    if "global_branch" in out:
        glob = {**out["global_branch"], "filters": 4}
        down = glob.get("downsample", 2)
        glob["depth"] = min(glob.get("depth", 4), max_depth(task.height // down, task.width // down))
        out["global_branch"] = glob
    return out


@pytest.mark.parametrize("task", TASKS, ids=list(TASKS))
@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_model_preset_builds_for_the_task(path: Path, task: str) -> None:
    check_output(fitted(load_spec(path).model, TASKS[task]), TASKS[task])


def test_build_model_takes_a_task_or_its_figures() -> None:
    """The task gives the classes and input shape (Mars by default); a ``Target`` gives only the figures."""
    from ablate.models import Target

    assert build_model({"type": "unet", **TINY}).output_shape == (None, *MARS.input_shape[:2], MARS.num_classes)
    assert build_model({"type": "unet", **TINY}, RGB).output_shape == (None, 48, 96, 7)
    shaped = build_model({"type": "unet", **TINY}, Target(num_classes=3, input_shape=(32, 32, 1)))
    assert (shaped.input_shape, shaped.output_shape) == ((None, 32, 32, 1), (None, 32, 32, 3))


# --- depth against the task's input ------------------------------------------------------------

def test_depth_is_checked_against_the_specs_task_at_load_time() -> None:
    message = (r"model\.depth=5 is not possible for a 48x96 input: 48 is not divisible by 2\^5 = 32; "
               r"expected a depth from 1 to 4\.")
    with pytest.raises(SpecError, match=message):
        load_spec({"task": RGB.model_dump(), "model": {"type": "unet", "depth": 5}})
    load_spec({"model": {"type": "unet", "depth": 5}})  # the Mars task's 64x128 takes it


def test_global_branch_depth_is_checked_at_its_downsampled_size_for_the_task() -> None:
    spec = load_spec(ROOT / "ablations/presets/seed-final.yaml")  # global branch: downsample 2, depth 4
    check_buildable(spec)  # Mars: 32x64 at the global branch
    message = (r"model\.global_branch\.depth=4 is not possible for a 24x48 input: 24 is not divisible by "
               r"2\^4 = 16; expected a depth from 1 to 3\.")
    with pytest.raises(SpecError, match=message):
        check_buildable(spec, RGB)
    with pytest.raises(SpecError, match=message):  # the build refuses it too
        build_model(spec.model, RGB)


def test_check_buildable_remembers_each_task_apart() -> None:
    spec = load_spec({"model": {"type": "unet", "depth": 5, "filters": 4}})
    check_buildable(spec)  # passes for Mars and is remembered ...
    with pytest.raises(SpecError, match=r"model\.depth=5 is not possible for a 48x96 input"):
        check_buildable(spec, RGB)  # ... but not for another task
    rgb = load_spec({"task": RGB.model_dump(), "model": {"type": "coarse_fine", **TINY, "global_branch": TINY_GLOBAL}})
    check_buildable(rgb)  # task None: the spec's own task


# --- the branch's scalars: checked once, by the registry's domains ------------------------------

GLOBAL = "model.global_branch"


@pytest.mark.parametrize(("model", "where", "expected"), [
    ({"filters": 0}, "model.filters", r"an integer >= 1, got 0"),
    ({"filters": None}, "model.filters", r"an integer \(default 16\), got None"),
    ({"width_mult": 0}, "model.width_mult", r"a number > 0, got 0"),
    ({"width_mult": None}, "model.width_mult", r"a finite number \(default 1\.0\), got None"),
    ({"global_branch": {**TINY_GLOBAL, "downsample": 0}}, f"{GLOBAL}.downsample", r"an integer >= 1, got 0"),
    ({"global_branch": {**TINY_GLOBAL, "downsample": None}}, f"{GLOBAL}.downsample",
     r"an integer \(default 2\), got None"),
    ({"global_branch": {**TINY_GLOBAL, "downsample": 1.5}}, f"{GLOBAL}.downsample", r"an integer \(default 2\)"),
    ({"global_branch": {**TINY_GLOBAL, "filters": None}}, f"{GLOBAL}.filters", r"an integer \(default 16\)"),
])
def test_a_bad_branch_scalar_is_refused_at_load_in_the_domains_words(model: dict[str, Any], where: str,
                                                                      expected: str) -> None:
    """``ablate spec`` refuses it (no build needed), and the build says the same, not its own words."""
    model = {"type": "coarse_fine", **TINY, **model}
    message = rf"^Invalid value for '{re.escape(where)}': expected {expected}"
    with pytest.raises(SpecError, match=message):
        load_spec({"model": model})
    with pytest.raises(SpecError, match=message):
        build_model(model)


def test_a_downsample_that_does_not_divide_the_input_is_refused_for_the_task() -> None:
    spec = load_spec({"model": {"type": "coarse_fine", **TINY, "global_branch": {**TINY_GLOBAL, "downsample": 3}}})
    with pytest.raises(SpecError, match=r"^model\.global_branch\.downsample=3 must divide the 64x128 input"):
        check_buildable(spec)
    check_buildable(spec, Task(height=48, width=96, classes=["a", "b"]))  # 3 divides 48x96


# --- one declaration: a slot added to the schema is picked up everywhere ----------------------

NORMS = Registry("norm")


@NORMS.register("batch")
class BatchNorm(keras.layers.BatchNormalization):
    """Batch normalisation of a stage's output."""

    def __init__(self, momentum: float = 0.99, **kwargs: Any) -> None:
        super().__init__(momentum=momentum, **kwargs)


def test_a_slot_declared_once_is_validated_built_listed_and_offered(capsys: pytest.CaptureFixture[str]) -> None:
    model = {"type": "unet", **TINY, "norm": {"type": "batch", "momentum": 0.9}}
    with BRANCH.added(Slot("norm", NORMS, AFTER_STAGE)):
        spec = load_spec({"model": model})  # the validator takes the new key
        for task in TASKS.values():
            check_output(spec.model, task)
        built = build_model(spec.model)
        norms = [layer for layer in built.layers if isinstance(layer, BatchNorm)]
        assert [layer.name for layer in norms] == ["enc0_norm", "enc1_norm", "dec1_norm", "dec0_norm"]
        assert {layer.momentum for layer in norms} == {0.9}
        glob = build_model({"type": "coarse_fine", **TINY, "global_branch": {**TINY_GLOBAL, "norm": {"type": "batch"}}})
        assert [layer.name for layer in glob.layers if isinstance(layer, BatchNorm)] == [
            "g_enc0_norm", "g_enc1_norm", "g_dec1_norm", "g_dec0_norm"]  # the global branch's slots too
        with pytest.raises(SpecError, match=r"Unknown key 'momentun' in model\.norm \(type 'batch'\)\. "
                                            r"Allowed keys: momentum\."):
            load_spec({"model": {**model, "norm": {"type": "batch", "momentun": 0.9}}})
        with pytest.raises(SpecError, match=r"Unknown norm 'layer'\. Known: batch\."):
            load_spec({"model": {**model, "norm": {"type": "layer"}}})
        assert slot_choices()["norm"] == ["batch"] and model_slots()["norm"] is NORMS  # the study space's choices
        assert main(["blocks"]) == 0
        assert "  norm             norm, after_stage, optional: batch" in capsys.readouterr().out.splitlines()
    with pytest.raises(SpecError, match=r"Unknown key 'norm' in model \(type 'unet'\)"):
        load_spec({"model": model})  # gone with the declaration
    assert "norm" not in MODELS.schema("unet").params


def test_a_required_slot_must_be_set() -> None:
    """The validator refuses a spec without it when the spec is read, in every branch that leaves it out."""
    message = r"^model\.{}norm: required; expected a block, one of batch \(e\.g\. \{{type: batch\}}\)\.$"
    with BRANCH.added(Slot("norm", NORMS, AFTER_STAGE, required=True)):
        assert BRANCH.slot("norm").describe() == "norm, after_stage, required: batch"
        with pytest.raises(SpecError, match=message.format("")):
            load_spec({"model": {"type": "unet", **TINY}})
        with pytest.raises(SpecError, match=message.format("")):
            load_spec({"model": {"type": "unet", **TINY, "norm": None}})
        local = {"type": "coarse_fine", **TINY, "norm": {"type": "batch"}}
        with pytest.raises(SpecError, match=message.format(r"global_branch\.")):
            load_spec({"model": {**local, "global_branch": TINY_GLOBAL}})
        left_out = load_spec({"model": local})  # the default global branch: refused when checked for the task
        with pytest.raises(SpecError, match=message.format(r"global_branch\.")):
            check_buildable(left_out)
        load_spec({"model": {"type": "unet", **TINY, "norm": {"type": "batch"}}})
    load_spec({"model": {"type": "unet", **TINY}})  # gone with the declaration


@pytest.mark.parametrize(("slot", "message"), [
    (Slot("conv", NORMS, AFTER_STAGE), r"Duplicate branch slot 'conv'"),
    (Slot("depth", NORMS, AFTER_STAGE), r"Duplicate branch slot 'depth'"),
    (Slot("norm", NORMS, "somewhere"), r"Slot 'norm' has role 'somewhere'; expected one of stage, after_stage"),
    (Slot("norm", NORMS, "stage"), r"Slot 'norm': role 'stage' is taken by 'conv'"),
])
def test_a_bad_slot_declaration_is_refused(slot: Slot, message: str) -> None:
    before = BRANCH.slots
    with pytest.raises(ValueError, match=message):
        BRANCH.add(slot)
    assert BRANCH.slots == before


def test_every_slot_is_a_key_of_every_branch_builder() -> None:
    """The builders' keys come from the schema: each slot, validated by its own registry."""
    from ablate.registry import BRANCHES

    for schema in (MODELS.schema("unet"), MODELS.schema("coarse_fine"), BRANCHES.schema("unet")):
        for slot in BRANCH.slots:
            assert slot.key in schema.params and schema.registries[slot.key] is slot.registry
        assert set(BRANCH.scalars) <= schema.params


def test_every_model_is_a_builder_class_with_its_own_check() -> None:
    """Builders declare check and build as methods: no function attributes patched on."""
    from ablate.models.unet import ModelBuilder

    for name in MODELS.names():
        builder = MODELS.get(name)
        assert isinstance(builder, type) and issubclass(builder, ModelBuilder), name
        assert builder.check is not ModelBuilder.check and builder.build is not ModelBuilder.build, name
        assert MODELS.schema(name).summary == (builder.__doc__ or "").strip().splitlines()[0]
