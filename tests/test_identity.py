"""Run identity: ``spec_hash`` covers what changes training (the data's content included) and
nothing else, and every key a spec may set is one its block actually uses."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import yaml
from helpers import PRESET

from ablate import load_all
from ablate.blocks.conv import DoubleConv
from ablate.data import default
from ablate.data.loader import file_fingerprint, load_npz
from ablate.data.synth import generate, write_npz
from ablate.errors import DataError, SpecError
from ablate.registry import ALL_REGISTRIES, Registry
from ablate.spec import Spec, check_buildable, load_spec

load_all()  # registers every block (a saved model of this project reloads)


def npz(path: Path, seed: int) -> Path:
    """A tiny synthetic data set (8 pairs); another seed gives other bytes."""
    write_npz(path, generate(8, seed=seed))
    return path


def spec_on(path: Path | str | None, *overrides: str) -> Spec:
    data = "null" if path is None else str(path)
    return load_spec(PRESET, [f"data.path={data}", *overrides])


# --- what the hash covers ----------------------------------------------------------------------

def test_hash_is_the_sha256_of_the_identity_which_holds_the_content_not_the_path(tmp_path: Path) -> None:
    spec = spec_on(npz(tmp_path / "a.npz", 0))
    identity = spec.identity()
    assert set(identity) == {"seed", "data", "model", "loss", "optimizer", "schedule", "train", "augment"}
    assert identity["data"] == {"fingerprint": file_fingerprint(tmp_path / "a.npz"), "val_fraction": 0.2,
                                "limit": None, "clean": False}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    assert spec.spec_hash == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert spec.to_dict()["data"]["path"] == str(tmp_path / "a.npz")  # the spec itself keeps the path


def test_new_bytes_at_the_same_path_change_the_hash(tmp_path: Path) -> None:
    path = npz(tmp_path / "data.npz", 0)
    before = spec_on(path).spec_hash
    npz(path, 1)  # replaced atomically: a new file at the same path
    assert spec_on(path).spec_hash != before


def test_a_file_rewritten_in_place_is_hashed_again(tmp_path: Path) -> None:
    path = npz(tmp_path / "data.npz", 0)
    before = spec_on(path).spec_hash
    stat = path.stat()
    with path.open("r+b") as fh:  # same inode, same size, one byte changed
        fh.seek(stat.st_size - 30)
        byte = fh.read(1)
        fh.seek(stat.st_size - 30)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock may not tick
    assert spec_on(path).spec_hash != before


def test_the_same_file_elsewhere_is_the_same_data(tmp_path: Path) -> None:
    path = npz(tmp_path / "a.npz", 0)
    (tmp_path / "moved").mkdir()
    copy = shutil.copy(path, tmp_path / "moved/renamed.npz")
    assert spec_on(copy).spec_hash == spec_on(path).spec_hash


def test_the_fingerprint_is_read_once_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.data import loader

    reads: list[str] = []
    real = loader.file_fingerprint
    monkeypatch.setattr(loader, "file_fingerprint", lambda p: reads.append(str(p)) or real(p))
    path = npz(tmp_path / "cached.npz", 0)
    spec = spec_on(path)
    hashes = {spec.spec_hash for _ in range(20)}
    assert len(hashes) == 1 and len(reads) == 1
    npz(path, 1)
    assert spec.spec_hash not in hashes and len(reads) == 2
    assert load_npz(path).fingerprint == file_fingerprint(path) and len(reads) == 2  # the loader shares it


@pytest.mark.parametrize("override", [
    "seed=1", "data.val_fraction=0.3", "data.limit=4", "data.clean=true", "model.depth=2", "model.filters=8",
    "model.skip={type: add}", "model.conv.kernel_size=5", "loss.ignore_background=false",
    "optimizer.learning_rate=0.002", "schedule.patience=5", "train.batch_size=16", "train.mixed_precision=true",
    "augment=[]",
])
def test_what_changes_training_changes_the_hash(override: str, tmp_path: Path) -> None:
    path = npz(tmp_path / "a.npz", 0)
    assert spec_on(path, override).spec_hash != spec_on(path).spec_hash


@pytest.mark.parametrize("override", ["name=other", "tracking.mask_every=1", "tracking.mask_images=2",
                                      "tracking.log_model=false"])
def test_what_only_changes_logging_keeps_the_hash(override: str, tmp_path: Path) -> None:
    path = npz(tmp_path / "a.npz", 0)
    assert spec_on(path, override).spec_hash == spec_on(path).spec_hash


def test_a_missing_file_hashes_its_path_and_the_loader_raises_later(tmp_path: Path) -> None:
    spec = spec_on(tmp_path / "absent.npz")
    assert spec.identity()["data"]["fingerprint"] == f"missing:{tmp_path / 'absent.npz'}"
    assert spec.spec_hash != spec_on(tmp_path / "other.npz").spec_hash
    with pytest.raises(DataError, match=r"Data file '.*absent\.npz' not found"):
        load_npz(spec.data.path)
    npz(tmp_path / "absent.npz", 0)  # once it appears, its content identifies it
    assert spec.identity()["data"]["fingerprint"] == file_fingerprint(tmp_path / "absent.npz")


def test_the_default_data_keeps_its_identity_when_generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued before the default set exists, resumed after: the same arms. Replaced: new arms."""
    location = tmp_path / "synthetic.npz"
    monkeypatch.setenv("ABLATE_DATA", str(location))
    monkeypatch.setattr(default, "DEFAULT_N", 8)
    monkeypatch.setattr(default, "DEFAULT_TEST", 2)
    before = spec_on(None)
    assert before.identity()["data"]["fingerprint"] == default.generator_identity()
    assert default.default_data_path() == location and location.exists()
    assert spec_on(None).spec_hash == before.spec_hash
    monkeypatch.setattr(default, "DEFAULT_N", 9)  # another generator setting: another data set
    assert default.generator_identity() != before.identity()["data"]["fingerprint"]
    assert spec_on(None).spec_hash == before.spec_hash  # but the file on disk is still the one written
    npz(location, 5)  # replaced by hand: its content decides
    assert spec_on(None).identity()["data"]["fingerprint"] == file_fingerprint(location)


def test_a_resumed_ablation_on_changed_data_matches_no_earlier_arm(tmp_path: Path) -> None:
    import optuna

    from ablate.ablation.design import load_ablation
    from ablate.ablation.runner import enqueue_missing

    data = npz(tmp_path / "data.npz", 0)
    base = tmp_path / "base.yaml"
    base.write_text(f"base: {PRESET}\ndata: {{path: {data}}}\n")
    ablation = tmp_path / "ab.yaml"
    ablation.write_text(yaml.safe_dump({"name": "identity", "base": str(base), "seeds": 2, "factors": {
        "skip": {"add": {"skip": {"type": "add"}}, "none": {"skip": {"type": "none"}}}}}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    first = load_ablation(ablation)
    old = {a.spec.spec_hash for a in first.arms}
    assert len(old) == 3 and enqueue_missing(study, first) == 6
    assert enqueue_missing(study, load_ablation(ablation)) == 0  # same data: everything is already queued
    npz(data, 1)  # same path, new content
    second = load_ablation(ablation)
    assert old.isdisjoint({a.spec.spec_hash for a in second.arms})
    assert enqueue_missing(study, second) == 6  # nothing from the old data counts for the new


# --- keys a block ignores are errors -----------------------------------------------------------

@pytest.mark.parametrize(("model", "message"), [
    ({"conv": {"type": "double", "drop_path": 0.1}},
     r"^Unknown key 'drop_path' in model\.conv \(type 'double'\)\. Allowed keys: kernel_size\.$"),
    ({"type": "coarse_fine", "global_branch": {"type": "unet", "conv": {"type": "double", "drop_path": 0.1}}},
     r"^Unknown key 'drop_path' in model\.global_branch\.conv \(type 'double'\)\. Allowed keys: kernel_size\.$"),
    ({"conv": {"type": "double", "filters": 8}},
     r"^Unknown key 'filters' in model\.conv \(type 'double'\): the builder supplies it\. Allowed keys: kernel_size"),
    ({"bottleneck": {"type": "aspp", "kernel_regularizer": "l2"}},
     r"^Unknown key 'kernel_regularizer' in model\.bottleneck \(type 'aspp'\): the builder supplies it"),
    ({"fusion": {"type": "add"}}, r"^Unknown key 'fusion' in model \(type 'unet'\)\. Allowed keys: bottleneck, conv"),
    ({"regularizer": {"type": "stochastic_depth", "rate": 0.2}},
     r"^model\.regularizer \(type 'stochastic_depth'\) has no effect: no block of this branch receives its "
     r"drop-path rate \(conv 'double', bottleneck 'plain', upsample 'transpose'.*Blocks that take drop_path: "
     r"conv: residual, se; bottleneck: transformer"),
    ({"conv": {"type": "residual", "drop_path": 0.1}, "regularizer": {"type": "stochastic_depth"}},
     r"^model\.regularizer \(type 'stochastic_depth'\) has no effect"),  # the block's own rate wins
])
def test_a_key_the_block_ignores_is_an_error(model: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):  # keys at load; a regularizer no block takes at build
        check_buildable(load_spec({"model": {"type": "unet", **model}}))


def test_stochastic_depth_with_a_block_that_takes_it_is_valid() -> None:
    load_spec({"model": {"type": "unet", "conv": {"type": "residual"}, "regularizer": {"type": "stochastic_depth"}}})
    load_spec({"model": {"type": "unet", "bottleneck": {"type": "transformer"},
                         "regularizer": {"type": "stochastic_depth"}}})


def test_a_loss_key_ignored_next_to_another_is_an_error() -> None:
    message = r"^Key 'cap' in loss \(type 'weighted_ce'\) is ignored when 'weights' is set; remove one of them\.$"
    with pytest.raises(SpecError, match=message):
        load_spec({"loss": {"type": "weighted_ce", "weights": [0, 1, 1, 1, 1], "cap": 3.0}})
    load_spec({"loss": {"type": "weighted_ce", "weights": [0, 1, 1, 1, 1]}})
    load_spec({"loss": {"type": "weighted_ce", "weights": None, "cap": 3.0}})


def test_a_double_block_saved_with_the_old_drop_path_reloads() -> None:
    config = {**DoubleConv(8, name="d").get_config(), "drop_path": 0.0}
    assert DoubleConv.from_config(config).get_config() == DoubleConv(8, name="d").get_config()


# --- contract: every key a spec may set changes what the block does ----------------------------
#
# For every registry entry and every key ``Registry.keys`` allows, the block built with another
# value of that key must behave differently (other weights or outputs, another loss value, learning
# rate, policy or augmented image). A block that accepts a key and ignores it fails here. For the
# components built from plain values (losses, regularizers, optimizers, schedules, augmentations)
# pairs of keys are checked too: one key must not silence another unless the entry declares it
# (``ignored_with``), which makes a spec giving both an error.

ALT: dict[Any, Any] = {  # another valid value per key; (kind, key) or (kind, name, key) when it differs
    "kernel_size": 5, "drop_path": 0.5, "se_ratio": 2, "rates": [1, 3], "bins": [1, 3], "heads": 2, "layers": 1,
    "mlp_ratio": 1.0, "dropout": 0.5, "inter_channels": 3,
    "rate": 0.3, "strength": 0.1, "l1_ratio": 0.9,
    "ignore_background": False, "smooth": 10.0, "gamma": 0.5, "alpha": 0.5, "per_image": True, "classes": "all",
    "power": 0.5, "cap": 2.0, "weights": [0.5, 1.0, 2.0, 3.0, 4.0], "terms": [{"loss": {"type": "dice"}}],
    "learning_rate": 0.5, "weight_decay": 0.3, "clipnorm": 1.0, "beta_1": 0.5, "beta_2": 0.9, "momentum": 0.5,
    "nesterov": True, "factor": 0.1, "patience": 7, "min_lr": 1e-3, "warmup_epochs": 3.0, "min_lr_ratio": 0.5,
    "p": 1.0, "degrees": 45.0, "fraction": 0.3, "scale": [1.5, 2.0], "holes": 3, "spacing": 4, "brightness": 0.5,
    "contrast": 0.5, "bank_size": 1, "min_pixels": 50, ("augmentations", "alpha"): 10.0,
    ("augmentations", "cutout", "size"): 0.5, ("augmentations", "copy_paste", "size"): 8,
    ("augmentations", "copy_paste", "class_name"): "sand",
    "depth": 2, "filters": 4, "width_mult": 2.0, "conv": {"type": "residual"}, "skip": {"type": "add"},
    "bottleneck": {"type": "se"}, "regularizer": {"type": "l2"}, "upsample": {"type": "bilinear"},
    "global_branch": {"type": "unet", "depth": 2, "filters": 2}, "fusion": {"type": "add"}, "downsample": 4,
}
BASE: dict[tuple[str, str], dict[str, Any]] = {  # entries that need keys to build, and small models
    ("losses", "sum"): {"terms": [{"loss": {"type": "ce"}}]},
    ("models", "unet"): {"depth": 1, "filters": 2},
    ("models", "coarse_fine"): {"depth": 1, "filters": 2, "global_branch": {"type": "unet", "depth": 1, "filters": 2}},
    ("branches", "unet"): {"depth": 1, "filters": 2},
}
SUPPLIED = {"filters": 16, "kernel_regularizer": None}
LAYER_INPUTS = {  # shapes of the inputs of each layer kind (batch 4, so drop path drops some samples)
    "conv_blocks": [(4, 8, 16, 8)], "bottlenecks": [(4, 4, 8, 16)], "upsamplers": [(4, 4, 8, 16)],
    "fusions": [(4, 8, 16, 16), (4, 4, 8, 8)], "skips": [(4, 8, 16, 16), (4, 8, 16, 8)],
}


def alt(kind: str, name: str, key: str) -> Any:
    for k in ((kind, name, key), (kind, key), key):
        if k in ALT:
            return ALT[k]
    pytest.fail(f"No alternative value for '{key}' of {kind} '{name}': add one to ALT so its effect is tested.")


def probe_layer(kind: str, config: dict[str, Any]) -> Any:
    keras.utils.set_random_seed(0)
    registry = ALL_REGISTRIES[kind]
    layer = registry.build(config, **{k: SUPPLIED[k] for k in registry.supplied})
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=shape).astype("float32") for shape in LAYER_INPUTS[kind]]
    out = layer(inputs if len(inputs) > 1 else inputs[0], training=True)
    return [tuple(w.shape) for w in layer.weights], keras.ops.convert_to_numpy(out)


def probe_regularizer(config: dict[str, Any]) -> Any:
    reg = ALL_REGISTRIES["regularizers"].build(config)
    kernel, stage = reg.kernel(), reg.after_stage("probe")
    return (None if kernel is None else keras.regularizers.serialize(kernel),
            None if stage is None else stage.get_config(), reg.drop_path)


def probe_loss(config: dict[str, Any]) -> Any:
    rng = np.random.default_rng(0)
    y_true = rng.choice([0, 1, 2, 4], p=[0.05, 0.6, 0.25, 0.1], size=(2, 16, 16))  # class 3 absent
    y_pred = keras.ops.softmax(rng.normal(size=(2, 16, 16, 5)).astype("float32"))
    loss = ALL_REGISTRIES["losses"].build(config)
    loss.prepare(y_true)
    return round(float(loss(y_true, y_pred)), 6)


def probe_optimizer(config: dict[str, Any]) -> Any:
    return {k: v for k, v in ALL_REGISTRIES["optimizers"].build(config).get_config().items() if k != "name"}


def probe_schedule(config: dict[str, Any]) -> Any:
    schedule = ALL_REGISTRIES["schedules"].build(config)
    lr = schedule.learning_rate(1e-3, 10, 10)
    rates = [float(lr(step)) for step in (0, 3, 20, 99)] if callable(lr) else lr
    callbacks = [{k: v for k, v in vars(cb).items() if isinstance(v, int | float | str | bool)}
                 for cb in schedule.callbacks(10, 10)]
    return rates, callbacks


def probe_augmentation(config: dict[str, Any]) -> Any:
    import tensorflow as tf

    yy, xx = np.mgrid[0:64, 0:128]
    images = np.stack([((np.sin(xx / 5 + i) + np.cos(yy / 7)) / 4 + 0.5)[..., None] for i in range(6)])
    masks = np.stack([((xx // 32 + yy // 16) % 3 + 1) for _ in range(6)]).astype("uint8")
    for i, side in enumerate((3, 5, 8, 10, 12, 14)):  # big-rock blobs of 9 to 196 pixels
        masks[i, 20 : 20 + side, 40 + 5 * i : 40 + 5 * i + side] = 4
    masks[0][masks[0] == 3] = 2  # image 0 holds 30 pixels of sand only (copy-paste's min_pixels matters)
    masks[0, 50:55, 0:6] = 3
    aug = ALL_REGISTRIES["augmentations"].build(config)
    aug.prepare(images.astype("float32"), masks)
    outs = [aug(tf.constant(images[s % 6], tf.float32), tf.constant(masks[s % 6]), tf.constant([0, s]))
            for s in range(12)]
    return [(np.round(i.numpy(), 5), m.numpy()) for i, m in outs]


def probe_model(kind: str, config: dict[str, Any]) -> Any:
    from ablate.models import build_model

    if kind == "branches":
        config = {"type": "coarse_fine", **BASE[("models", "coarse_fine")], "global_branch": config}
    return build_model(config).to_json()


def probe_for(kind: str) -> Callable[[dict[str, Any]], Any]:
    if kind in LAYER_INPUTS:
        return lambda config: probe_layer(kind, config)
    if kind in ("models", "branches"):
        return lambda config: probe_model(kind, config)
    return {"regularizers": probe_regularizer, "losses": probe_loss, "optimizers": probe_optimizer,
            "schedules": probe_schedule, "augmentations": probe_augmentation}[kind]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and np.allclose(a, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


PAIRWISE = ("regularizers", "losses", "optimizers", "schedules", "augmentations")
ENTRIES = [(kind, name) for kind, registry in ALL_REGISTRIES.items() for name in registry.names()
           if registry.keys(name)]


def ignored(registry: Registry, name: str, a: str, b: str) -> bool:
    """Whether the entry declares that setting one of ``a``, ``b`` makes the block ignore the other."""
    declared = registry._ignored_with[name]
    return b in declared.get(a, ()) or a in declared.get(b, ())


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}.{n}" for k, n in ENTRIES])
def test_every_key_a_spec_may_set_changes_the_block(kind: str, name: str) -> None:
    registry, fresh = ALL_REGISTRIES[kind], probe_for(kind)
    seen: dict[str, Any] = {}

    def probe(config: dict[str, Any]) -> Any:
        key = json.dumps(config, sort_keys=True)
        if key not in seen:
            seen[key] = fresh(config)
        return seen[key]

    base = {"type": name, **BASE.get((kind, name), {})}
    reference = probe(base)
    assert same(fresh(base), reference), f"the probe of {kind} '{name}' is not deterministic"
    for key in registry.keys(name):
        value = alt(kind, name, key)
        assert not same(probe({**base, key: value}), reference), (
            f"{kind} '{name}' accepts '{key}' but {key}={value!r} changes nothing: drop the argument "
            f"(the builder passes optional arguments only to blocks that take them)")
    if kind not in PAIRWISE:
        return  # layers and models: slow to build, and their keys do not depend on each other
    for first, second in itertools.permutations(registry.keys(name), 2):
        config = {**base, first: alt(kind, name, first)}
        if ignored(registry, name, first, second):
            with pytest.raises(SpecError, match=rf"is ignored when '({first}|{second})' is set"):
                registry.validate({**config, second: alt(kind, name, second)})
            continue
        assert not same(probe({**config, second: alt(kind, name, second)}), probe(config)), (
            f"{kind} '{name}': with {first}={config[first]!r}, '{second}' changes nothing; declare it in "
            f"ignored_with so a spec giving both is an error")
