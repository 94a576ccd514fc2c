"""Data for any task (issue 13): both .npz layouts, the task inferred or checked, inspect, generate_task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import assert_clean_failure, cli_in_process

from ablate.data import generate, generate_task, infer_task, inspect_npz, load_npz, write_npz
from ablate.data.infer import label_ranges
from ablate.data.loader import check_header, from_arrays
from ablate.errors import DataError, SpecError
from ablate.task import MARS, Task

REAL = Path(__file__).parents[1].parent / "shared/data/mars_ai4mars_64x128.npz"
RGB7 = Task(height=48, width=96, channels=3, classes=["void", "grass", "road", "water", "building", "tree", "car"],
            ignore_label=255)
GREY3 = Task(height=32, width=48, channels=1, classes=["sky", "sea", "land"], ignore_label=None)


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- layouts


def test_course_and_separate_layouts_load_to_the_same_arrays(tmp_path: Path) -> None:
    train = generate(12, seed=3)["training_set"]
    course = load_npz(_save(tmp_path / "c.npz", training_set=train, test_set=train[:3, 0]))
    for i, images in enumerate((train[:, 0], train[:, 0, ..., None], train[:, 0] / 255.0)):
        sep = load_npz(_save(tmp_path / f"s{i}.npz", images=images, masks=train[:, 1], test_images=images[:3]))
        np.testing.assert_allclose(sep.images, course.images, atol=1e-6)
        assert np.array_equal(sep.masks, course.masks)
        assert sep.test_images is not None and sep.test_images.shape == (3, 64, 128, 1)
        assert sep.task == GREY_OF(64, 128, int(train[:, 1].max()) + 1)  # only the course layout is read as Mars
    assert course.task is MARS and course.images.dtype == np.float32 and course.masks.dtype == np.uint8
    assert load_npz(tmp_path / "s0.npz", task=MARS).task is MARS  # a given task is kept


def GREY_OF(h: int, w: int, k: int) -> Task:  # noqa: N802 - reads like the tasks above
    return Task(height=h, width=w, channels=1, classes=[f"class_{i}" for i in range(k)], ignore_label=None)


def test_rgb_separate_layout(tmp_path: Path) -> None:
    arrays = generate_task(RGB7, 20, n_test=4, seed=1)
    data = load_npz(_save(tmp_path / "rgb.npz", **arrays, groups=np.arange(20) // 2), task=RGB7)
    assert data.images.shape == (20, 48, 96, 3) and data.images.dtype == np.float32
    assert data.test_images is not None and data.test_images.shape == (4, 48, 96, 3)
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    np.testing.assert_allclose(data.images * 255, arrays["images"], atol=1e-3)
    assert data.task is RGB7 and data.groups is not None and data.groups.tolist()[:4] == [0, 0, 1, 1]


@pytest.mark.parametrize(("arrays", "match"), [
    ({"images": np.zeros((4, 8, 8, 2), np.uint8), "masks": np.zeros((4, 8, 8), np.uint8)},
     r"'images' has shape \(4, 8, 8, 2\); expected \(N, H, W\) grey or \(N, H, W, C\) images with C 1 \(grey\) or 3"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "masks": np.zeros((4, 8, 9), np.uint8)},
     r"'masks' has shape \(4, 8, 9\); expected \(4, 8, 8\)"),
    ({"images": np.zeros((4, 8, 8, 3), np.uint8), "masks": np.zeros((4, 8, 8), np.uint8),
      "test_images": np.zeros((2, 8, 8), np.uint8)}, r"'test_images' has shape \(2, 8, 8\); expected \(M, 8, 8, 3\)"),
    ({"images": np.zeros((4, 8, 8), np.uint8)}, r"no 'training_set' array \(found keys: \['images'\]\); expected "
                                                r"the course layout .* or separate 'images' and 'masks' arrays"),
    ({"images": np.zeros((0, 8, 8), np.uint8), "masks": np.zeros((0, 8, 8), np.uint8)}, "'images' is empty"),
])
def test_separate_layout_errors_are_one_line(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = _save(tmp_path / "bad.npz", **arrays)
    for check in (load_npz, check_header):
        with pytest.raises(DataError, match=match) as info:
            check(path)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- inference


def test_inference_rgb_seven_classes_with_255() -> None:
    arrays = generate_task(RGB7, 30, seed=0)
    task = from_arrays(arrays, "x.npz", "f").task
    assert task.input_shape == (48, 96, 3) and task.num_classes == 7 and task.ignore_label == 255
    assert task.classes == [f"class_{i}" for i in range(7)] and task.scored_ids == tuple(range(7))


def test_inference_without_ignore_and_at_least_two_classes() -> None:
    arrays = generate_task(GREY3, 12, seed=0)
    assert from_arrays(arrays, "x", "f").task == GREY_OF(32, 48, 3)
    one = {"images": arrays["images"], "masks": np.zeros_like(arrays["masks"])}
    assert from_arrays(one, "x", "f").task == GREY_OF(32, 48, 2)
    assert infer_task(8, 8, 1, {0, 3, 255}).classes == ["class_0", "class_1", "class_2", "class_3"]


def test_inference_is_mars_only_for_the_course_file_at_its_size() -> None:
    train = generate(8, seed=0)["training_set"]
    assert from_arrays({"training_set": train}, "x", "f").task is MARS
    k = int(train[:, 1, :, :64].max()) + 1
    assert from_arrays({"training_set": train[..., :64]}, "x", "f").task == GREY_OF(64, 64, max(k, 2))
    beyond = train.copy()
    beyond[0, 1, 0, 0] = 6
    assert from_arrays({"training_set": beyond}, "x", "f").task == GREY_OF(64, 128, 7)


def test_a_limit_does_not_change_the_inferred_task() -> None:
    arrays = generate_task(GREY3, 10, seed=0)
    arrays["masks"][:5] = 0
    arrays["masks"][9, 0, 0] = 255  # only past the limit
    data = from_arrays(arrays, "x", "f", limit=5)
    assert len(data.masks) == 5 and data.task.ignore_label == 255 and data.task.num_classes == 3


@pytest.mark.skipif(not REAL.is_file(), reason=f"real data file not found at {REAL}")
def test_the_real_mars_file_infers_mars() -> None:
    assert load_npz(REAL, limit=50).task is MARS
    check_header(REAL, task=MARS)


# ---------------------------------------------------------------- checks against a given task


@pytest.mark.parametrize(("task", "arrays", "match"), [
    (RGB7, lambda: generate_task(RGB7.model_copy(update={"height": 32}), 4),
     r"'images' are 32x96 \(shape \(4, 32, 96, 3\)\); the task expects 48x96 images: resize them .*--size 48x96"),
    (RGB7, lambda: generate_task(GREY3.model_copy(update={"height": 48, "width": 96}), 4),
     r"'images' have 1 \(grey\) channels .*; the task expects 3 \(RGB\)"),
    (GREY3, lambda: generate_task(RGB7.model_copy(update={"height": 32, "width": 48}), 4),
     r"'images' have 3 \(RGB\) channels .*; the task expects 1 \(grey\)"),
    (GREY3, lambda: {**generate_task(GREY3, 4), "masks": np.full((4, 32, 48), 5, np.uint8)},
     r"Masks in 'masks' hold labels \[5\] outside 0-2, the task's labels; expected 0 sky, 1 sea, 2 land\."),
    (RGB7, lambda: {**generate_task(RGB7, 4), "masks": np.full((4, 48, 96), 9, np.uint8)},
     r"labels \[9\] outside 0-6 and 255, .* 5 tree, 6 car, 255 ignored\."),
    (RGB7, lambda: {"training_set": generate(4, 0)["training_set"]},
     r"'training_set' holds grey image/mask pairs .* the task expects 3 channels"),
    (MARS, lambda: {"training_set": generate(4, 0)["training_set"][..., :96]},
     r"'training_set' has shape \(4, 2, 64, 96\); expected \(N, 2, 64, 128\) for the task's 64x128x1 input"),
])
def test_checks_against_a_given_task_are_one_line(tmp_path: Path, task: Task, arrays, match: str) -> None:
    path = _save(tmp_path / "d.npz", **arrays())
    with pytest.raises(DataError, match=match) as info:
        load_npz(path, task=task)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    if "labels" not in match:  # shapes and channels are known from the headers alone
        with pytest.raises(DataError, match=match):
            check_header(path, task=task)


def test_label_ranges() -> None:
    assert label_ranges([0, 1, 2, 3, 4]) == "0-4"
    assert label_ranges([255, 0, 1, 2]) == "0-2 and 255"
    assert label_ranges([1, 3, 4]) == "1, 3 and 4" and label_ranges([]) == ""


# ---------------------------------------------------------------- inspect


def test_inspect_prints_the_inferred_task_and_shares_by_name(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(tmp_path / "rgb.npz", **generate_task(RGB7, 12, seed=0))
    info = inspect_npz(path)
    assert set(info["class_shares"]) == {*map(str, range(7)), "255"} and info["task"]["ignore_label"] == 255
    assert abs(sum(info["class_shares"].values()) - 1) < 1e-9
    code, out, _ = cli_in_process(["data", "inspect", str(path)], capsys)
    assert code == 0
    assert "task: 48x96x3, 7 classes (class_0, class_1, class_2, class_3, class_4, class_5, class_6), ignore " \
           "label 255, scored: class_0" in out
    assert "6 class 6 " in out and "255 ignored " in out
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump({"name": "a spec", "task": RGB7.to_dict()}))
    code, out, _ = cli_in_process(["data", "inspect", str(path), "--task", str(task_file)], capsys)
    assert code == 0 and f"task: {RGB7.describe()}" in out and "6 car " in out


def test_inspect_against_another_task_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_npz(tmp_path / "mars.npz", generate(6, 0))
    task_file = tmp_path / "t.json"
    task_file.write_text(RGB7.to_json())
    code, _, err = cli_in_process(["data", "inspect", str(path), "--task", str(task_file)], capsys)
    assert_clean_failure(code, err, r"'training_set' holds grey image/mask pairs")
    task_file.write_text('{"height": 3}')
    code, _, err = cli_in_process(["data", "inspect", str(path), "--task", str(task_file)], capsys)
    assert_clean_failure(
        code, err, r"task in '.*t\.json': Invalid value for 'task\.height': .*greater than or equal to 4")


# ---------------------------------------------------------------- generate_task


@pytest.mark.parametrize("task", [RGB7, GREY3, MARS], ids=["rgb7", "grey3", "mars"])
def test_generate_task_shapes_labels_and_determinism(task: Task) -> None:
    arrays = generate_task(task, 24, n_test=3, seed=5)
    shape = (24, task.height, task.width) + ((3,) if task.channels == 3 else ())
    assert arrays["images"].shape == shape and arrays["images"].dtype == np.uint8
    assert arrays["test_images"].shape == (3, *shape[1:]) and arrays["masks"].shape == shape[:3]
    present = set(np.unique(arrays["masks"]).tolist())
    assert present == set(task.valid_labels)  # every class, and 255 where it is the ignore label
    again = generate_task(task, 24, n_test=3, seed=5)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    assert not np.array_equal(arrays["images"], generate_task(task, 24, seed=6)["images"])
    assert from_arrays(arrays, "x", "f", task=task).task is task


def test_generate_task_classes_look_different() -> None:
    arrays = generate_task(RGB7, 30, seed=0)
    colours = np.stack([arrays["images"][arrays["masks"] == k].mean(axis=0) for k in range(7)])
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[~np.eye(7, dtype=bool)]
    assert gaps.min() > 15  # 0-255 scale: a tiny model separates them
    with pytest.raises(DataError, match="n must be an integer >= 1"):
        generate_task(RGB7, 0)
    with pytest.raises(DataError, match="needs an ablate.task.Task"):
        generate_task({"height": 8}, 4)  # type: ignore[arg-type]


def test_synth_cli_for_a_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task_file = tmp_path / "grey.json"
    task_file.write_text(GREY3.to_json())
    out = tmp_path / "g.npz"
    code, text, _ = cli_in_process(["data", "synth", "--task", str(task_file), "--out", str(out), "--n", "10",
                                    "--n-test", "2"], capsys)
    assert code == 0 and GREY3.describe() in text
    data = load_npz(out, task=GREY3)
    assert data.images.shape == (10, 32, 48, 1) and data.test_images is not None
    task_file.write_text("classes: [a]")
    with pytest.raises(SpecError, match="classes"):
        from ablate.data.infer import task_from_file

        task_from_file(task_file)


BAD_YAML = [  # (id, the file's bytes, what yamlio's line says after the file's name)
    ("too-large", b"height: 8\ndescription: " + b"a" * (1 << 20) + b"\n",
     r" is 1\.0 MiB; expected a YAML file of at most 1 MiB"),
    ("duplicate-key", b"height: 8\nwidth: 8\nheight: 16\n", r", line 3 repeats the key 'height' \(first at line 1\)"),
    ("invalid", b"height: 8\nclasses: [\n", r" is not valid YAML: .* at line 3, column 1\.$"),
    ("not-utf8", b"height: \xff\n", r" is not UTF-8 text: byte 0xff at offset 8"),
]


@pytest.mark.parametrize(("content", "match"), [case[1:] for case in BAD_YAML], ids=[case[0] for case in BAD_YAML])
def test_a_bad_task_file_is_yamlio_s_one_line(tmp_path: Path, content: bytes, match: str) -> None:
    """A task file is read by ``ablate.yamlio``, under the limits every spec file has."""
    from ablate.data.infer import task_from_file

    task_file = tmp_path / "task.yaml"
    task_file.write_bytes(content)
    with pytest.raises(SpecError, match=rf"^Task file '.*task\.yaml'{match}") as caught:
        task_from_file(task_file)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_clean_reads_the_separate_layout_and_keeps_test_images(tmp_path: Path) -> None:
    from ablate.data import clean_npz

    arrays = generate_task(RGB7, 12, n_test=12, seed=2)  # as many test images as pairs: they must not be cut
    arrays["masks"][[2, 5, 7, 9]] = arrays["masks"][0]  # one intricate mask on five unrelated RGB images
    src = _save(tmp_path / "in.npz", **arrays)
    report = clean_npz(src, tmp_path / "out.npz", tmp_path / "r.json")
    assert report.removed == [0, 2, 5, 7, 9]
    with np.load(tmp_path / "out.npz") as out:
        assert out["images"].shape == (7, 48, 96, 3) and out["test_images"].shape == (12, 48, 96, 3)


def test_find_outliers_treats_the_task_s_ignore_label_as_unlabelled() -> None:
    """RGB7's ignore label is 255: a class with a strip of 255 is a simple mask that may repeat, while
    a strip of class 1 on class 0 (a real class here, Mars's unlabelled value) is intricate."""
    from ablate.data import find_outliers

    strip_of_255, strip_on_0 = np.ones((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    strip_of_255[:2], strip_on_0[:2] = 255, 1  # a boundary of 8 px, inside the 32 px perimeter
    masks = np.stack([strip_of_255] * 3 + [strip_on_0] * 3)
    report = find_outliers(masks, ignore_label=RGB7.ignore_label)
    assert report.removed == [3, 4, 5]
    assert [(g["classes"], g["terrain_classes"], g["outlier"]) for g in report.groups] == [
        ([1, 255], 1, False), ([0, 1], 2, True)]
    assert find_outliers(masks, ignore_label=MARS.ignore_label).removed == [0, 1, 2]  # the same masks under Mars


def test_find_outliers_has_no_default_ignore_label() -> None:
    """The task's ignore label is passed each time: a default would be one task's (Mars's 0) for all."""
    from ablate.data import find_outliers

    with pytest.raises(TypeError, match="ignore_label"):
        find_outliers(np.zeros((3, 8, 8), np.uint8))  # type: ignore[call-arg]


def test_a_run_cleans_its_data_with_its_tasks_ignore_label(tmp_path: Path) -> None:
    """`data.clean: true` in a run: the outliers are found with the task's ignore label (255 here), not Mars's 0."""
    from helpers import PRESET

    from ablate.spec import load_spec
    from ablate.train import load_data

    strip_of_255, strip_on_0 = np.ones((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    strip_of_255[:2], strip_on_0[:2] = 255, 1
    masks = np.stack([strip_of_255] * 3 + [strip_on_0] * 3)
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8)
    path = _save(tmp_path / "strips.npz", images=images, masks=masks)
    task = "task={height: 8, width: 8, channels: 1, classes: [a, b], ignore_label: 255}"
    overrides = [task, f"data.path={path}", "data.clean=true", "data.val_fraction=0.34", "model.depth=2"]
    split = load_data(load_spec(PRESET, overrides))
    assert len(split.x_train) + len(split.x_val) == 3
    assert set(split.val_index.tolist()) <= {0, 1, 2}  # kept: the strips of 255; gone: the strips of class 1 on 0
