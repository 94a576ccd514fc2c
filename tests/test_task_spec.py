"""The spec's `task:` section: validation in one line, Mars as the default with unchanged hashes, and the
checks that read the task before any data or model exists (depth, copy-paste's class, a campaign's data)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import PRESET, ROOT

from ablate.errors import DataError, SpecError
from ablate.spec import load_spec
from ablate.task import MARS, Task, check_depth, max_depth, task_from_dict

RGB7 = {"height": 48, "width": 96, "channels": 3, "ignore_label": 255,
        "classes": ["void", "grass", "road", "water", "building", "tree", "car"]}


def _task_override(task: dict) -> str:
    return "task=" + yaml.safe_dump(task, default_flow_style=True).strip()


def test_mars_is_the_default_and_stating_it_keeps_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The data's identity is fixed here: the default set's depends on whether data/ holds a generated file.
    monkeypatch.setattr("ablate.spec.data_fingerprint", lambda path: "fixed")
    plain = load_spec(PRESET)
    stated = load_spec(PRESET, [_task_override({"height": 64, "width": 128})])
    other = load_spec(PRESET, [_task_override(RGB7)])
    assert plain.task is None and plain.given_task() == MARS and stated.task == MARS
    assert plain.spec_hash == stated.spec_hash != other.spec_hash
    assert "task.height" not in plain.flat() and other.flat()["task.channels"] == "3"
    # the hashes of two presets as they were before tasks existed (commit 29cf836, the same fixed data
    # identity): runs already in a store still match
    assert plain.spec_hash == "d70da2cb303e"
    assert load_spec(ROOT / "ablations/presets/mars-recipe.yaml").spec_hash == "332e2c7438fb"


def test_a_spec_with_a_data_file_and_no_task_leaves_the_task_to_the_file(tmp_path: Path) -> None:
    spec = load_spec(PRESET, [f"data.path={tmp_path / 'x.npz'}", "model.depth=5"])
    assert spec.given_task() is None  # depth 5 is not checked against Mars's size: the file decides


def _grey_file(path: Path, height: int, width: int, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 255, (12, height, width), dtype=np.uint8),
             masks=rng.integers(0, classes, (12, height, width), dtype=np.uint8))
    return path


def test_before_its_data_loads_a_model_is_checked_against_the_files_size_not_mars(tmp_path: Path) -> None:
    """With no `task:`, the builder's checks and the memory estimate before any data is read (a run's
    first step, a campaign's check of every arm, a study's trial) use the file's image size from its
    headers: depth 7 fits a 256x256 file (not 64x128), depth 5 does not fit a 48x80 one (64x128 it does)."""
    from ablate import memory
    from ablate.spec import check_buildable, checking_task

    square = _grey_file(tmp_path / "square.npz", 256, 256)
    spec = load_spec(PRESET, [f"data.path={square}", "model.depth=7", "model.filters=2"])
    assert checking_task(spec).input_shape == (256, 256, 1)
    check_buildable(spec)  # refused before: "64 is not divisible by 2^7 = 128"
    memory.check(spec)
    assert memory.input_hw(spec) == (256, 256)

    small = _grey_file(tmp_path / "small.npz", 48, 80)
    spec = load_spec(PRESET, [f"data.path={small}", "model.depth=5", "model.filters=2"])
    with pytest.raises(SpecError, match=r"model\.depth=5 is not possible for a 48x80 input: 48 is not divisible"):
        check_buildable(spec)
    course = load_spec(PRESET, [f"data.path={ROOT / 'missing.npz'}"])
    with pytest.raises(DataError, match="missing.npz"):
        checking_task(course)


@pytest.mark.parametrize(("task", "message"), [
    ({"classes": ["a", "a"]}, r"class names must be distinct"),
    ({"classes": ["Big Rock", "b"]}, r"class name 'Big Rock' must be 1-40 lower-case letters"),
    ({"classes": ["a"]}, r"'task\.classes': List should have at least 2 items"),
    ({"scored": ["rock"]}, r"scored names \['rock'\] that are not classes; expected some of"),
    ({"scored": ["background"]}, r"class 'background' is the ignore label \(0\) and cannot be scored"),
    ({"channels": 2}, r"'task\.channels': Input should be 1 or 3"),
    ({"ignore_label": 256}, r"'task\.ignore_label': Input should be less than or equal to 255"),
    ({"colours": [[0, 0, 0]]}, r"colours must hold one \[r, g, b\] of 0-255 per class \(5\)"),
    ({"classes": ["a", "b"], "ignore_label": None, "scored": []}, r"scored must name one or more"),
    ({"colour": []}, r"Unknown key 'colour' in task"),
])
def test_a_bad_task_is_one_line_naming_what_is_wrong(task: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        load_spec(PRESET, [_task_override(task)])
    assert "\n" not in str(err.value)


def test_depth_is_checked_against_the_tasks_size_with_the_figures() -> None:
    with pytest.raises(SpecError, match=r"model\.depth=3 is not possible for a 48x100 input: 100 is not divisible "
                                        r"by 2\^3 = 8; expected a depth from 1 to 2"):
        load_spec(PRESET, [_task_override({"height": 48, "width": 100}), "model.depth=3"])
    assert load_spec(PRESET, [_task_override(RGB7), "model.depth=4"]).model["depth"] == 4
    assert (max_depth(64, 128), max_depth(48, 96), max_depth(256, 256), max_depth(7, 7)) == (5, 4, 7, 0)
    with pytest.raises(SpecError, match=r"the bottleneck would be 1x2 pixels"):
        check_depth(6, 64, 128)


def test_copy_paste_names_a_class_of_the_task_when_the_spec_is_read() -> None:
    ok = load_spec(PRESET, [_task_override(RGB7), "augment=[{type: copy_paste, class_name: car}]"])
    assert ok.augment[0]["class_name"] == "car"
    with pytest.raises(SpecError, match=r"augment\[0\]\.class_name names class 'car', which this task does not have; "
                                        r"expected one of background, soil"):
        load_spec(PRESET, ["augment=[{type: copy_paste, class_name: car}]"])
    with pytest.raises(SpecError, match=r"names 'background', the task's ignore label"):
        load_spec(PRESET, ["augment=[{type: copy_paste, class_name: background}]"])


def test_the_task_round_trips_through_json_and_derives_what_scoring_needs() -> None:
    task = task_from_dict(RGB7)
    assert task_from_dict(__import__("json").loads(task.to_json())) == task
    assert task.scored_ids == tuple(range(7)) and not task.ignore_is_class
    assert task.valid_labels == (*range(7), 255) and len(task.palette) == 7
    assert MARS.scored_ids == (1, 2, 3, 4) and MARS.ignore_is_class and MARS.valid_labels == (0, 1, 2, 3, 4)
    none = Task(classes=["a", "b", "c"], ignore_label=None, scored=["b", "c"])
    assert none.scored_ids == (1, 2) and none.valid_labels == (0, 1, 2)
    assert re.search(r"48x96x3, 7 classes .* ignore label 255, scored: void, grass", task.describe())


def test_an_ablation_checks_its_data_against_the_task_before_queueing(tmp_path: Path) -> None:
    from ablate.ablation.design import load_ablation
    from ablate.ablation.orchestrate import check_data

    data = tmp_path / "grey.npz"
    np.savez(data, images=np.zeros((8, 48, 96), np.uint8), masks=np.zeros((8, 48, 96), np.uint8))
    body = {"name": "t", "base": {"base": str(ROOT / "ablations/presets/unet-baseline.yaml"),
                                  "data": {"path": str(data)}, "task": RGB7},
            "design": "one-at-a-time", "seeds": 2, "factors": {"skip": {"add": {"skip": {"type": "add"}}}}}
    file = tmp_path / "t.yaml"
    file.write_text(yaml.safe_dump(body))
    with pytest.raises(DataError, match=r"ablation 't' \(every arm\): .*1 \(grey\) channel.*3 \(RGB\).*Nothing was "
                                        r"queued"):
        check_data(load_ablation(file))


def test_a_run_says_once_which_task_it_inferred_from_the_file(tmp_path: Path, synth_npz: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from ablate.train import shared_data

    data = tmp_path / "rgb.npz"
    masks = np.zeros((6, 48, 96), np.uint8)
    masks[:, :4] = 255
    masks[:, 10:] = 2
    np.savez(data, images=np.zeros((6, 48, 96, 3), np.uint8), masks=masks)
    inferred = shared_data(str(data), None)
    assert inferred.task.num_classes == 3
    assert shared_data(str(data), None) is inferred  # the same file again: kept, and no second line
    assert shared_data(str(data), None, inferred.task) is inferred  # the task it was read with: kept
    named = inferred.task.model_copy(update={"classes": ["sky", "sand", "rock"]})
    assert shared_data(str(data), None, named).task == named  # another task: read again, checked against it
    out = capsys.readouterr().out
    assert out.count("task inferred from 'rgb.npz': 48x96x3, 3 classes (class_0, class_1, class_2), "
                     "ignore label 255") == 1, out
    assert shared_data(str(synth_npz), None).task == MARS  # the course's Mars file: nothing to say
    assert "inferred" not in capsys.readouterr().out


@pytest.mark.parametrize("task", [{"colour": []}, {"channels": 2}, {"height": 2}, {"classes": ["a"]},
                                  {"ignore_label": 256}])
def test_a_bad_task_reads_the_same_in_a_spec_and_on_its_own(task: dict) -> None:
    """One message style: a spec's `task:` section and a task read on its own (a task file, a run's
    task.json) fail with the same line."""
    with pytest.raises(SpecError) as in_spec:
        load_spec(PRESET, [_task_override(task)])
    with pytest.raises(SpecError) as alone:
        task_from_dict(task)
    assert str(in_spec.value) == str(alone.value)
    with pytest.raises(SpecError) as from_file:
        task_from_dict(task, "task in 't.yaml'")
    assert str(from_file.value) == f"task in 't.yaml': {alone.value}"


def test_an_unknown_key_names_the_sections_keys_and_the_closest() -> None:
    with pytest.raises(SpecError) as err:
        load_spec(PRESET, ["train.epoch=3"])
    assert str(err.value) == ("Unknown key 'epoch' in train. Allowed keys: epochs, batch_size, early_stopping, "
                              "mixed_precision, jit_compile, shuffle_buffer. Did you mean 'epochs'?")
    with pytest.raises(SpecError, match=r"^Unknown key 'colours_' in task\. Allowed keys: height, .*colours\. "
                                        r"Did you mean 'colours'\?$"):
        task_from_dict({"colours_": []})


@pytest.mark.parametrize(("task", "augment", "message"), [
    (None, {"type": "copy_paste", "class_name": "background"},
     r"^augment\[0\]\.class_name names 'background', the task's ignore label, which is not scored; expected one of "
     r"soil, bedrock, sand, big_rock\.$"),
    (None, {"type": "copy_paste", "class_name": "boulder"},
     r"^augment\[0\]\.class_name names class 'boulder', which this task does not have; expected one of background, "),
    ({"classes": ["a", "b"], "ignore_label": None}, {"type": "cutout"},
     r"^augment\[0\] \(cutout\): the task has no ignore_label, so a hole has no label that is left unscored; "
     r"set task\.ignore_label \(e\.g\. 255\) or drop cutout\.$"),
])
def test_an_augmentation_the_given_task_cannot_take_is_refused_when_the_spec_loads(
        task: dict | None, augment: dict, message: str) -> None:
    """Copy-paste of the ignore label or of no class, cutout without an ignore label: refused by
    `ablate spec` (a given task), by the same rule the run's augmentation policy applies (one copy)."""
    overrides = ["augment=" + yaml.safe_dump([augment], default_flow_style=True).strip()]
    overrides += [_task_override(task), "model.depth=2"] if task is not None else []
    with pytest.raises(SpecError, match=message):
        load_spec(PRESET, overrides)


def test_a_tasks_colours_do_not_change_the_spec_hash() -> None:
    """Colours paint figures; they do not change what is trained, so they are not part of a run's identity."""
    rgb7 = load_spec(PRESET, [_task_override(RGB7), "model.depth=2"])
    painted = load_spec(PRESET, [_task_override({**RGB7, "colours": [[9, 9, 9]] * 7}), "model.depth=2"])
    assert painted.spec_hash == rgb7.spec_hash
    other = load_spec(PRESET, [_task_override({**RGB7, "ignore_label": None}), "model.depth=2"])
    assert other.spec_hash != rgb7.spec_hash
    mars = load_spec(PRESET, [_task_override({"colours": [[9, 9, 9]] * 5})])
    assert mars.spec_hash == load_spec(PRESET).spec_hash
