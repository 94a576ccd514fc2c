"""Spec contract: dotted overrides, unknown keys, type errors, base inheritance, hash stability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import PRESET, ROOT

from ablate import load_all
from ablate.cli.main import main
from ablate.errors import SpecError
from ablate.spec import Spec, deep_merge, load_spec

load_all()  # registers every block (a saved model of this project reloads)

PRESETS = sorted((ROOT / "ablations/presets").glob("*.yaml"))


def spec_of(*overrides: str) -> Spec:
    return load_spec(PRESET, overrides)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- overrides ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("override", "get", "expected"),
    [
        ("train.epochs=3", lambda s: s.train.epochs, 3),
        ("seed=7", lambda s: s.seed, 7),
        ("data.val_fraction=0.25", lambda s: s.data.val_fraction, 0.25),
        ("optimizer.learning_rate=0.01", lambda s: s.optimizer["learning_rate"], 0.01),
        ("optimizer.learning_rate=1e-4", lambda s: s.optimizer["learning_rate"], 1e-4),  # YAML 1.1 reads a str
        ("optimizer.weight_decay=2.5E-3", lambda s: s.optimizer["weight_decay"], 2.5e-3),
        ("data.limit=null", lambda s: s.data.limit, None),
        ("data.limit=200", lambda s: s.data.limit, 200),
        ("data.path=/tmp/x.npz", lambda s: s.data.path, "/tmp/x.npz"),
        ("data.clean=true", lambda s: s.data.clean, True),
        ("model.depth=4", lambda s: s.model["depth"], 4),
        ("model.skip.type=add", lambda s: s.model["skip"], {"type": "add"}),
        ("augment=[]", lambda s: s.augment, []),
        ("augment=[{type: hflip, p: 1.0}]", lambda s: s.augment, [{"type": "hflip", "p": 1.0}]),
        ("augment.0.p=0.25", lambda s: s.augment, [{"type": "hflip", "p": 0.25}]),
        ("name=my-ablation", lambda s: s.name, "my-ablation"),
    ],
)
def test_dotted_override_sets_a_typed_value(override: str, get: Any, expected: Any) -> None:
    value = get(spec_of(override))
    assert value == expected and type(value) is type(expected)


def test_override_of_a_whole_block_replaces_it() -> None:
    spec = spec_of("model.conv.kernel_size=5", "model.conv={type: double}")
    assert spec.model["conv"] == {"type": "double"}  # the old block's kwargs are gone
    spec = spec_of("model.bottleneck={type: se_da}")
    assert spec.model["bottleneck"] == {"type": "se_da"}
    assert spec.model["skip"] == {"type": "concat"}  # siblings untouched


def test_overrides_apply_in_order_and_leave_the_file_alone() -> None:
    before = PRESET.read_text()
    assert spec_of("train.epochs=3", "train.epochs=4").train.epochs == 4
    assert PRESET.read_text() == before


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"Override 'seed\.x': 'seed' is a value, not a section"):
        spec_of("seed.x=1")


@pytest.mark.parametrize("bad", ["train.epochs", "train.epochs 3", ""])
def test_override_without_equals_is_an_error(bad: str) -> None:
    with pytest.raises(SpecError, match=rf"Override '{bad}' is not of the form key=value \(e\.g\. train\.epochs=3\)"):
        spec_of(bad)


def test_list_override_needs_an_index() -> None:
    with pytest.raises(SpecError, match=r"Override 'augment\.first\.p': 'first' should be a list index"):
        spec_of("augment.first.p=1")


# --- unknown keys and wrong types --------------------------------------------------------------

@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=3", r"Unknown key 'epochs' in the spec\."),
        ("train.epoch=3", r"Unknown key 'epoch' in train\."),
        ("data.paht=x.npz", r"Unknown key 'paht' in data\."),
        ("tracking.mask_evry=2", r"Unknown key 'mask_evry' in tracking\."),
        ("model.filter=8", r"Unknown key 'filter' in model \(type 'unet'\)\. Allowed keys: .*filters"),
        ("model.skip.axis=1", r"Unknown key 'axis' in model\.skip \(type 'concat'\)"),
        ("model.conv.kernel=5", r"Unknown key 'kernel' in model\.conv \(type 'double'\)\. Allowed keys: .*kernel_size"),
        ("loss.gamma=2", r"Unknown key 'gamma' in loss \(type 'ce'\)\. Allowed keys: ignore_background"),
        ("optimizer.lr=0.1", r"Unknown key 'lr' in optimizer \(type 'adamw'\)"),
        ("schedule.patiense=2", r"Unknown key 'patiense' in schedule \(type 'plateau'\)"),
        ("augment.0.q=0.3", r"Unknown key 'q' in augment\[0\] \(type 'hflip'\)\. Allowed keys: p"),
        ("model.skip.type=concatt", r"Unknown skip 'concatt'\. Known: .*Did you mean 'concat'\?"),
        ("loss.type=cee", r"Unknown loss 'cee'\. Known: .*Did you mean 'ce'\?"),
    ],
)
def test_unknown_keys_are_named_with_their_section(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_of(override)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", r"Invalid value for 'train\.epochs': Input should be a valid integer.*\(got 'abc'\)"),
        ("train.epochs=0", r"Invalid value for 'train\.epochs': Input should be greater than or equal to 1"),
        ("seed=1.5", r"Invalid value for 'seed': Input should be a valid integer \(got 1\.5\)"),  # strict
        ("data.val_fraction=1.5", r"Invalid value for 'data\.val_fraction': Input should be less than 1"),
        ("data.limit=1", r"Invalid value for 'data\.limit': Input should be greater than or equal to 2"),
        ("tracking.mask_images=0", r"Invalid value for 'tracking\.mask_images'"),
        ("train=3", r"Invalid value for 'train': Input should be a valid dictionary"),
        ("augment={type: hflip}", r"Invalid value for 'augment': Input should be a valid list"),
        ("model={depth: 3}", r"Invalid value for 'model': .*needs a 'type' key"),
        ("model.depth=9", r"model\.depth=9 is not possible for a 64x128 input"),
    ],
)
def test_wrong_types_give_a_clear_spec_error(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_of(override)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=abc", r"Invalid value for 'model\.depth': expected an integer \(default 3\), got 'abc'"),
        ("model.filters=abc", r"Invalid value for 'model\.filters': expected an integer \(default 16\), got 'abc'"),
        ("model.filters=0", r"Invalid value for 'model\.filters': expected an integer >= 1, got 0"),
        ("model.width_mult=-1", r"Invalid value for 'model\.width_mult': expected a number > 0, got -1"),
        ("model.conv.filters=8", r"Unknown key 'filters' in .*\(type 'double'\)"),  # the builder supplies it
    ],
)
def test_wrong_block_arguments_give_a_spec_error(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_of(override)


@pytest.mark.parametrize("override", ["optimizer.learning_rate=fast", "model.num_classes=3"])
def test_wrong_values_outside_the_model_give_a_spec_error(override: str) -> None:
    with pytest.raises(SpecError, match=override.split("=")[0].split(".")[-1]):
        spec_of(override)


# --- files and inheritance ------------------------------------------------------------------------

def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"Spec file '.*nope\.yaml' not found; expected a YAML file"):
        load_spec(tmp_path / "nope.yaml")


def test_invalid_yaml_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"is not valid YAML"):
        load_spec(write(tmp_path / "bad.yaml", "train: {epochs: 3\n"))
    with pytest.raises(SpecError, match=r"must hold a mapping at the top level, got list"):
        load_spec(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path / "tiny-run.yaml", "seed: 1\n")).name == "tiny-run"


def test_base_inheritance_merges_the_delta(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "parent.yaml", f"base: {PRESET}\ntrain: {{epochs: 2}}\nmodel: {{filters: 8}}\n")
    child = write(tmp_path / "sub/child.yaml",
                  "base: ../parent.yaml\nname: conv5\nmodel:\n  conv: {type: double, kernel_size: 5}\n")
    spec = load_spec(child)
    preset = spec_of()
    assert spec.name == "conv5"
    assert spec.train.epochs == 2 and spec.model["filters"] == 8  # from the parent
    assert spec.model["conv"] == {"type": "double", "kernel_size": 5}  # the child's delta
    assert spec.model["skip"] == preset.model["skip"] and spec.loss == preset.loss  # from the grandparent
    same = spec_of("train.epochs=2", "model.filters=8", "model.conv.kernel_size=5")
    assert spec.spec_hash == same.spec_hash


def test_base_block_of_the_same_type_is_merged(tmp_path: Path) -> None:
    write(tmp_path / "parent.yaml", "model: {type: unet, conv: {type: double, kernel_size: 5}}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\nmodel: {depth: 2, conv: {type: double}}\n")
    assert load_spec(child).model == {"type": "unet", "depth": 2, "conv": {"type": "double", "kernel_size": 5}}


def test_base_block_with_a_new_type_is_replaced_whole(tmp_path: Path) -> None:
    assert deep_merge({"m": {"type": "a", "k": 1}, "x": 1}, {"m": {"type": "b"}}) == {"m": {"type": "b"}, "x": 1}
    write(tmp_path / "parent.yaml", "optimizer: {type: adamw, weight_decay: 0.1}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\noptimizer: {type: adam}\n")
    assert load_spec(child).optimizer == {"type": "adam"}  # adam takes no weight_decay: merging would fail


def test_unknown_key_in_a_base_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "parent.yaml", "train: {epochz: 2}\n")
    with pytest.raises(SpecError, match=r"Unknown key 'epochz' in train"):
        load_spec(write(tmp_path / "child.yaml", "base: parent.yaml\n"))


def test_missing_base_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"Spec file 'missing\.yaml' not found"):
        load_spec(write(tmp_path / "child.yaml", "base: missing.yaml\n"))


# --- hash ---------------------------------------------------------------------------------------

def test_hash_ignores_yaml_key_order_and_name(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "name: a\nseed: 3\ntrain: {epochs: 2, batch_size: 8}\n"
                                   "model: {type: unet, depth: 2, filters: 4}\n")
    b = write(tmp_path / "b.yaml", "model: {filters: 4, depth: 2, type: unet}\n"
                                   "train: {batch_size: 8, epochs: 2}\nseed: 3\nname: b\n")
    sa, sb = load_spec(a), load_spec(b)
    assert sa.name != sb.name
    assert sa.spec_hash == sb.spec_hash
    assert sa.canonical_json() != sb.canonical_json()  # the canonical JSON keeps the name
    assert len(sa.spec_hash) == 12 and int(sa.spec_hash, 16) >= 0


@pytest.mark.parametrize("override", ["seed=1", "train.epochs=31", "model.skip.type=add",
                                      "optimizer.learning_rate=0.002", "augment=[]", "data.limit=100"])
def test_a_changed_value_changes_the_hash(override: str) -> None:
    assert spec_of(override).spec_hash != spec_of().spec_hash


def test_equal_values_give_equal_hashes() -> None:
    assert spec_of("train.epochs=30").spec_hash == spec_of().spec_hash  # 30 is the preset's value
    assert spec_of("optimizer.learning_rate=1e-3").spec_hash == spec_of().spec_hash  # 0.001 in the file


def test_hash_is_stable_across_processes() -> None:
    code = ("from ablate.spec import load_spec; "
            f"print(load_spec({str(PRESET)!r}, ['train.epochs=3', 'model.skip.type=add']).spec_hash)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.stdout.strip() == spec_of("train.epochs=3", "model.skip.type=add").spec_hash


def test_flat_params_use_dotted_keys() -> None:
    flat = spec_of().flat()
    assert flat["model.skip.type"] == "concat"
    assert flat["train.epochs"] == "30"
    assert flat["data.path"] == "null"
    assert flat["augment"] == "hflip" and flat["augment.0.p"] == "0.5"
    assert all(isinstance(v, str) for v in flat.values())


# --- the CLI and the presets ------------------------------------------------------------------------

def test_ablate_spec_prints_the_resolved_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", str(PRESET), "train.epochs=2", "model.skip={type: add}"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    expected = spec_of("train.epochs=2", "model.skip={type: add}")
    assert printed == expected.to_dict()
    assert printed["train"]["epochs"] == 2 and printed["model"]["skip"] == {"type": "add"}
    assert f"spec_hash: {expected.spec_hash}" in captured.err


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_every_preset_resolves(path: Path) -> None:
    spec = load_spec(path)
    assert Spec.model_validate(spec.to_dict()) == spec  # its JSON round-trips through validation
