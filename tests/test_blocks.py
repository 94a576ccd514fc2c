"""Every registered block, tested by being registered.

For each skip, conv block, bottleneck, upsampler, regularizer and fusion: it builds from its
default config inside a tiny model on a 64x128x1 input, gives (N, 64, 128, 5) finite
probabilities and finite gradients, and a saved ``.keras`` model reloads in a fresh process
with the same predictions. Plus the registry's error contract and explicit registration.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from ablate import load_all
from ablate.blocks.base import DropPath
from ablate.errors import SpecError
from ablate.models import build_model
from ablate.registry import ALL_REGISTRIES, BRANCH, CONV_BLOCKS, REGULARIZERS, SKIPS
from ablate.spec import check_buildable, load_spec

load_all()  # registers every block

ROOT = Path(__file__).resolve().parents[1]
BATCH = 2
TINY = {"depth": 2, "filters": 4}  # a few thousand weights: well under a second per model on a CPU
# Registry key -> the model key its blocks go under: every slot of the schema, and the coarse-fine fusion.
MODEL_KEY = {**{slot.registry.key: slot.key for slot in BRANCH.slots}, "fusions": "fusion"}
CASES = [(kind, name) for kind in MODEL_KEY for name in ALL_REGISTRIES[kind].names()]


def tiny_model_spec(kind: str, name: str, depth: int | None = None) -> dict[str, Any]:
    """The smallest model that exercises block ``name`` of registry ``kind`` from its default config."""
    block = {"type": name}
    if kind == "fusions":
        return {"type": "coarse_fine", **TINY, "fusion": block,
                "global_branch": {"type": "unet", "downsample": 2, "depth": 3, "filters": 4}}
    if kind == "bottlenecks":  # depth 4: the 4x8 map the seed models use
        return {"type": "unet", "depth": depth or 4, "filters": 4, "bottleneck": block}
    if kind == "regularizers":  # residual stages, so that stochastic depth has branches to drop
        return {"type": "unet", **TINY, "conv": {"type": "residual"}, "regularizer": block}
    return {"type": "unet", **TINY, MODEL_KEY[kind]: block}


def images(n: int = BATCH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 64, 128, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def model_for() -> Callable[[str, str], keras.Model]:
    """Builds each case's model once per module (seeded), shared by the tests below."""
    cache: dict[tuple[str, str], keras.Model] = {}

    def get(kind: str, name: str) -> keras.Model:
        if (kind, name) not in cache:
            keras.utils.set_random_seed(0)
            cache[kind, name] = build_model(tiny_model_spec(kind, name))
        return cache[kind, name]

    return get


def case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


# --- every block builds, has the right shape, stays finite, trains ------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_block_builds_with_finite_outputs_and_gradients(case: tuple[str, str], model_for: Any) -> None:
    model = model_for(*case)
    x = images()
    labels = np.random.default_rng(1).integers(0, 5, size=(BATCH, 64, 128))
    with tf.GradientTape() as tape:
        probs = model(x, training=True)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
        loss = loss + sum(model.losses)  # kernel penalties of the regularizer, if any
    grads = tape.gradient(loss, model.trainable_variables)
    assert tuple(probs.shape) == (BATCH, 64, 128, 5)
    assert np.isfinite(probs.numpy()).all()
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, atol=1e-4)
    unused = [v.path for v, g in zip(model.trainable_variables, grads, strict=True) if g is None]
    assert not unused, f"weights with no gradient (unconnected): {unused}"
    bad = [v.path for v, g in zip(model.trainable_variables, grads, strict=True) if not np.isfinite(g.numpy()).all()]
    assert not bad, f"non-finite gradients: {bad}"


@pytest.mark.parametrize("name", ALL_REGISTRIES["bottlenecks"].names())
def test_bottleneck_works_on_the_smallest_map(name: str) -> None:
    """Depth 5 leaves a 2x4 map: pooling bins, image pooling and attention must still fit."""
    keras.utils.set_random_seed(0)
    model = build_model(tiny_model_spec("bottlenecks", name, depth=5))
    assert tuple(model.get_layer("bottleneck").output.shape[1:3]) == (2, 4)
    probs = model(images(), training=False).numpy()
    assert probs.shape == (BATCH, 64, 128, 5) and np.isfinite(probs).all()


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_regularizer_takes_effect(name: str, model_for: Any) -> None:
    """Each policy leaves its trace: kernel penalties, stage dropout layers or drop path."""
    policy = REGULARIZERS.build({"type": name})
    model = model_for("regularizers", name)
    layers = list(model._flatten_layers(include_self=False))
    has_dropout = any(isinstance(layer, keras.layers.Dropout | keras.layers.SpatialDropout2D) for layer in layers)
    drop_paths = [layer.rate for layer in layers if isinstance(layer, DropPath)]
    assert bool(model.losses) == (policy.kernel() is not None)
    assert has_dropout == (policy.after_stage("probe") is not None)
    assert any(rate > 0 for rate in drop_paths) == (policy.drop_path > 0)


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    x = keras.ops.ones((256, 2, 2, 1))
    layer = DropPath(0.5, seed=0)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(256, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}  # dropped, or kept and rescaled by 1 / (1 - rate)
    assert (per_sample == per_sample[:, :1]).all()  # one decision per sample
    assert 0.3 < (per_sample[:, 0] == 0).mean() < 0.7


# --- save in this process, reload in a fresh one -------------------------------------------

RELOAD = """
import sys
from pathlib import Path

import keras
import numpy as np

import ablate

ablate.load_all()  # what a user calls before loading a model of this project

folder = Path(sys.argv[1])
x = np.load(folder / "x.npy")
for path in sorted(folder.glob("*.keras")):
    model = keras.models.load_model(path, compile=False)
    np.save(path.with_suffix(".npy"), keras.ops.convert_to_numpy(model(x, training=False)))
"""


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's own save, numpy 2
def test_every_block_survives_a_keras_round_trip_in_a_fresh_process(model_for: Any, tmp_path: Path) -> None:
    x = images(seed=2)
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for case in CASES:
        model = model_for(*case)
        model.save(tmp_path / f"{case_id(case)}.keras")
        expected[case_id(case)] = keras.ops.convert_to_numpy(model(x, training=False))
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key, want in expected.items():
        got = np.load(tmp_path / f"{key}.npy")
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{key} predicts differently after reloading")


# --- registry errors ------------------------------------------------------------------------

def test_duplicate_name_raises() -> None:
    before = CONV_BLOCKS.get("residual")
    with pytest.raises(ValueError, match=r"Duplicate conv block 'residual': already registered by .*ResidualConv"):
        CONV_BLOCKS.register("residual")(keras.layers.Layer)
    assert CONV_BLOCKS.get("residual") is before


def test_unknown_name_lists_known_names_and_the_closest() -> None:
    known = re.escape(", ".join(SKIPS.names()))
    with pytest.raises(SpecError, match=rf"Unknown skip 'atention'\. Known: {known}\. Did you mean 'attention'\?"):
        SKIPS.get("atention")


@pytest.mark.parametrize("key", [slot.key for slot in BRANCH.slots])
def test_unknown_key_in_a_nested_block_is_named(key: str) -> None:
    block = {"type": BRANCH.slot(key).choices()[-1], "bogus": 1}
    with pytest.raises(SpecError, match=rf"Unknown key 'bogus' in model\.{key} \(type '{block['type']}'\)"):
        load_spec({"model": {"type": "unet", key: block}})


def test_unknown_key_two_levels_down_is_named() -> None:
    branch = {"type": "unet", "bottleneck": {"type": "transformer", "hedas": 2}}
    message = r"Unknown key 'hedas' in model\.global_branch\.bottleneck \(type 'transformer'\)\. Allowed keys: .*heads"
    with pytest.raises(SpecError, match=message):
        load_spec({"model": {"type": "coarse_fine", "global_branch": branch}})


@pytest.mark.parametrize(("block", "message"), [
    ({"bottleneck": {"type": "aspp", "rates": [0, 2]}}, r"'model\.bottleneck\.rates\[0\]': expected an integer >= 1"),
    ({"bottleneck": {"type": "transformer", "heads": 0}}, r"'model\.bottleneck\.heads': expected an integer >= 1"),
    ({"regularizer": {"type": "dropout", "rate": 1.0}}, r"'model\.regularizer\.rate': expected a number in \[0, 1\)"),
    ({"skip": {"type": "attention", "inter_channels": -1}}, r"'model\.skip\.inter_channels': expected an integer >= 1"),
    ({"conv": {"type": "double", "filters": 8}}, r"Unknown key 'filters' in model\.conv"),  # the builder sets it
])
def test_bad_block_value_is_a_spec_error_at_load_time(block: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec({"model": {"type": "unet", **block}})


def test_a_constructor_check_is_a_spec_error_before_training() -> None:
    spec = load_spec({"model": {"type": "unet", "bottleneck": {"type": "aspp", "rates": []}}})  # ranges hold
    with pytest.raises(SpecError, match=r"model\.bottleneck: rates must be a non-empty list"):
        check_buildable(spec)  # what every training command runs first (and `ablate spec --build`)


# --- explicit registration -------------------------------------------------------------------

@pytest.mark.parametrize("package", ["ablate.blocks", "ablate.models"])
def test_every_module_is_imported_by_its_package(package: str) -> None:
    folder = ROOT / "core" / package.split(".", 1)[1]  # the package `ablate` installs from core/
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    imported: set[str] = set()
    for node in ast.walk(ast.parse((folder / "__init__.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == package:
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package + "."):
            imported.add(node.module.split(".")[2])
    assert not modules - imported, f"{package}/__init__.py does not import {sorted(modules - imported)}"


def test_every_block_has_a_one_line_summary() -> None:
    """`ablate blocks` shows the docstring's first line: every block needs one."""
    missing = [f"{kind}:{name}" for kind in MODEL_KEY for name in ALL_REGISTRIES[kind].names()
               if not ALL_REGISTRIES[kind].summary(name)]
    assert not missing
