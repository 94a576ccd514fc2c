"""Scoring, losses, augmentations and a short fit for any task: Mars, an RGB 7-class task whose
ignore label (255) is outside the classes, and a task without an ignore label.

The reference here is written directly from the rule (``ablate.task``): pixels whose truth is
the ignore label are not scored, every other pixel counts for its true class and against its
predicted class, the mean is over the scored classes present in truth or prediction.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from ablate.errors import SpecError
from ablate.metrics import MeanIoU, segmentation_metrics
from ablate.scoring import confusion_matrix, iou_from_confusion, iou_from_image_confusions, per_image_iou
from ablate.task import MARS, Task

RGB7 = Task(height=48, width=96, channels=3, classes=["void", "grass", "road", "water", "building", "tree", "car"],
            ignore_label=255)
NO_IGNORE = Task(height=16, width=16, classes=["sky", "sea", "ship"], ignore_label=None)
TASKS = {"mars": MARS, "rgb7": RGB7, "no_ignore": NO_IGNORE}


def reference(task: Task, truth: np.ndarray, pred: np.ndarray) -> tuple[float, dict[int, float]]:
    scored = truth != task.ignore_label if task.ignore_label is not None else np.ones(truth.shape, bool)
    t, p = truth[scored], pred[scored]
    per_class = {}
    for k in task.scored_ids:
        union = np.sum((t == k) | (p == k))
        per_class[k] = float(np.sum((t == k) & (p == k)) / union) if union else math.nan
    present = [v for v in per_class.values() if not math.isnan(v)]
    return (float(np.mean(present)) if present else math.nan), per_class


def random_pair(task: Task, seed: int, n: int = 9, shape: tuple[int, int] = (6, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Truth over the task's valid labels (the ignore label included) and predictions over its classes."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(task.valid_labels, size=(n, *shape)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.5, truth, rng.integers(0, task.num_classes, truth.shape))
    pred = np.where(pred >= task.num_classes, 0, pred).astype(np.uint8)  # an ignored truth is predicted a class
    return truth, pred


def probs_of(pred: np.ndarray, c: int, seed: int = 0) -> np.ndarray:
    probs = np.random.default_rng(seed).uniform(0.0, 0.5, size=(*pred.shape, c)).astype(np.float32)
    np.put_along_axis(probs, pred[..., None].astype(np.int64), 1.0, axis=-1)
    return probs / probs.sum(axis=-1, keepdims=True)


def streamed(task: Task, truth: np.ndarray, pred: np.ndarray, batch: int = 4) -> dict[str, float]:
    metrics = segmentation_metrics(record_images=len(truth), task=task)
    probs = probs_of(pred, task.num_classes)
    for m in metrics:
        for i in range(0, len(truth), batch):
            m.update_state(truth[i : i + batch], probs[i : i + batch])
    out = {m.name: float(m.result()) for m in metrics}
    out["_images"] = metrics[0].images.numpy()  # type: ignore[assignment]
    return out


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_and_keras_scoring_agree_with_the_rule(name: str, seed: int) -> None:
    task = TASKS[name]
    truth, pred = random_pair(task, seed)
    mean, per_class = reference(task, truth, pred)
    cm_mean, cm_per = iou_from_confusion(confusion_matrix(truth, pred, task=task), task)
    assert cm_mean == pytest.approx(mean) and list(cm_per) == list(task.scored_ids)
    np.testing.assert_allclose(list(cm_per.values()), list(per_class.values()))
    got = streamed(task, truth, pred)
    assert got["miou"] == pytest.approx(mean, abs=1e-6)
    assert sorted(k for k in got if k.startswith("iou_")) == sorted(f"iou_{n}" for n in task.scored_names)
    for k, iou in per_class.items():
        assert got[f"iou_{task.classes[k]}"] == pytest.approx(0.0 if math.isnan(iou) else iou, abs=1e-6)
    # per image: NumPy from the masks, and from the Keras metric's per-image counts
    ious = per_image_iou(truth, pred, task=task)
    assert ious.shape == (len(truth), len(task.scored_ids))
    np.testing.assert_allclose(iou_from_image_confusions(np.rint(got["_images"]), task), ious)
    for i in range(len(truth)):
        np.testing.assert_allclose(ious[i], list(reference(task, truth[i], pred[i])[1].values()))


@pytest.mark.parametrize("name", ["mars", "rgb7"])
def test_changing_ignored_pixels_changes_nothing(name: str) -> None:
    """Whatever is predicted on an ignored pixel, no figure moves."""
    task = TASKS[name]
    truth, pred = random_pair(task, 3)
    ignored = truth == task.ignore_label
    assert ignored.any()
    other = np.where(ignored, (pred + 1) % task.num_classes, pred).astype(np.uint8)
    for p in (pred, other):
        assert iou_from_confusion(confusion_matrix(truth, p, task=task), task) == \
            iou_from_confusion(confusion_matrix(truth, pred, task=task), task)
        np.testing.assert_array_equal(per_image_iou(truth, p, task=task), per_image_iou(truth, pred, task=task))
    assert streamed(task, truth, other)["miou"] == pytest.approx(streamed(task, truth, pred)["miou"], abs=1e-7)


def test_metric_config_round_trips_the_task_and_old_configs_load_as_mars() -> None:
    metric = MeanIoU(class_id=6, task=RGB7, record_images=2)
    clone = MeanIoU.from_config(metric.get_config())
    assert (clone.name, clone.task, clone.num_classes, clone.record_images) == ("iou_car", RGB7, 7, 2)
    old = {"class_id": 2, "num_classes": 5, "name": "iou_bedrock", "record_images": 0, "sample_positions": [],
           "sample_shape": None}  # a Mars model saved before tasks
    assert MeanIoU.from_config(old).task == MARS
    with pytest.raises(ValueError, match="not a scored class"):
        MeanIoU(class_id=0)  # Mars background is not scored
    with pytest.raises(ValueError, match="disagrees"):
        MeanIoU(num_classes=3)


def test_labels_outside_the_task_are_refused() -> None:
    truth = np.full((1, 2, 2), 9, np.uint8)
    with pytest.raises(ValueError, match=r"y_true labels must be in \[0, 7\) or the ignore label 255; got 9"):
        per_image_iou(truth, np.zeros_like(truth), task=RGB7)


def test_metric_compiles_under_xla_with_an_outside_ignore_label() -> None:
    truth, pred = random_pair(RGB7, 5, n=6)
    model = keras.Sequential([keras.Input((*truth.shape[1:], 7)), keras.layers.Identity()])
    model.compile(loss=lambda y, p: keras.ops.mean(p) * 0.0, metrics=segmentation_metrics(task=RGB7), jit_compile=True)
    logs = model.evaluate(probs_of(pred, 7), truth, batch_size=4, verbose=0, return_dict=True)
    assert logs["miou"] == pytest.approx(reference(RGB7, truth, pred)[0], abs=1e-6)


# --- losses: the ignore label outside the classes ------------------------------------------------

def _loss_configs() -> dict[str, dict]:
    from ablate import load_all
    from ablate.registry import LOSSES

    load_all()
    configs = {name: {"type": name} for name in LOSSES.names() if name != "sum"}
    configs["sum"] = {"type": "sum", "terms": [{"loss": {"type": "ce"}}, {"loss": {"type": "dice"}, "weight": 0.5}]}
    return configs


LOSS_CONFIGS = _loss_configs()


def _built(config: dict, task: Task, masks: np.ndarray):  # noqa: ANN202
    from ablate.registry import LOSSES

    loss = LOSSES.build(config)
    loss.set_task(task)
    loss.prepare(masks)
    return loss


@pytest.mark.parametrize("name", sorted(LOSS_CONFIGS))
def test_losses_leave_ignored_pixels_out_gradient_zero_there(name: str) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    y = rng.choice(RGB7.valid_labels, size=(2, 6, 8)).astype(np.int32)
    y[0, 0, :4] = 255
    logits = tf.Variable(rng.normal(size=(2, 6, 8, 7)).astype(np.float32))
    loss = _built(LOSS_CONFIGS[name], RGB7, y)
    with tf.GradientTape() as tape:
        value = loss(y, tf.nn.softmax(logits))
    grad = tape.gradient(value, logits).numpy()
    assert np.isfinite(float(value)) and np.isfinite(grad).all()
    ignored = y == 255
    assert np.abs(grad[ignored]).max() == 0.0
    assert np.abs(grad[~ignored]).max() > 0.0
    # ignored pixels' predictions change nothing
    other = logits.numpy().copy()
    other[ignored] = rng.normal(size=(int(ignored.sum()), 7)) * 5
    assert float(loss(y, tf.nn.softmax(other))) == pytest.approx(float(value), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(LOSS_CONFIGS))
def test_a_loss_config_carries_its_task_and_a_mars_config_is_unchanged(name: str) -> None:
    from ablate.registry import LOSSES

    y = np.random.default_rng(1).choice(RGB7.valid_labels, size=(2, 6, 8))
    loss = _built(LOSS_CONFIGS[name], RGB7, y)
    clone = type(loss).from_config(loss.get_config())
    assert clone.task == RGB7
    assert "task" not in LOSSES.build(LOSS_CONFIGS[name]).get_config()


def test_class_weights_follow_the_scored_classes() -> None:
    from ablate.losses import class_weights

    masks = np.array([0, 0, 0, 0, 1, 1, 2, 255, 255, 255, 255, 255])
    task = Task(height=4, width=4, classes=["a", "b", "c"], ignore_label=255)
    assert class_weights(masks, 1.0, 10.0, True, task=task) == [1.0, 2.0, 4.0]
    scored = Task(height=4, width=4, classes=["a", "b", "c"], ignore_label=None, scored=["b", "c"])
    assert class_weights(masks, 1.0, 10.0, True, task=scored) == [0.0, 1.0, 2.0]


# --- augmentations on RGB and for any task -------------------------------------------------------

def _aug_configs() -> dict[str, dict]:
    from ablate.registry import AUGMENTATIONS

    configs = {name: {"type": name, "p": 1.0} for name in AUGMENTATIONS.names()}
    configs["copy_paste"] = {"type": "copy_paste", "p": 1.0, "size": 16, "min_pixels": 4, "class_name": "car"}
    return configs


AUG_CONFIGS = _aug_configs()


def rgb_pair(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """RGB7 images and masks: seven column bands (one class each, car last), an ignored top row."""
    rng = np.random.default_rng(0)
    cols = np.minimum(np.arange(RGB7.width) // 14, 6)
    masks = np.broadcast_to(cols, (n, RGB7.height, RGB7.width)).copy().astype(np.uint8)
    masks[:, :2] = 255
    colours = np.array(RGB7.palette, np.float32) / 255
    images = colours[np.minimum(masks, 6)] + rng.normal(0, 0.05, (n, RGB7.height, RGB7.width, 3))
    return np.clip(images, 0, 1).astype(np.float32), masks


@pytest.mark.parametrize("name", sorted(AUG_CONFIGS))
def test_every_augmentation_runs_on_rgb_and_keeps_the_task_labels(name: str) -> None:
    import tensorflow as tf

    from ablate.augment import Policy

    images, masks = rgb_pair()
    policy = Policy([AUG_CONFIGS[name]], RGB7)
    policy.prepare(images, masks)
    for s in range(3):
        image, mask = policy(tf.constant(images[s]), tf.constant(masks[s]), tf.constant([7, s]))
        assert image.shape == images.shape[1:] and image.dtype == tf.float32
        assert mask.shape == masks.shape[1:] and mask.dtype == tf.uint8
        assert set(np.unique(mask.numpy())) <= set(RGB7.valid_labels)
        assert np.isfinite(image.numpy()).all()


def test_moved_in_pixels_and_holes_get_the_ignore_label() -> None:
    import tensorflow as tf

    from ablate.augment import Policy

    images, masks = rgb_pair()
    masks[:] = 3  # no 255 anywhere: any 255 after is a fill
    for config in ({"type": "shift", "p": 1.0, "fraction": 0.5}, {"type": "cutout", "p": 1.0, "size": 0.5},
                   {"type": "elastic", "p": 1.0, "alpha": 30.0}):
        _, mask = Policy([config], RGB7)(tf.constant(images[0]), tf.constant(masks[0]), tf.constant([0, 1]))
        assert set(np.unique(mask.numpy())) == {3, 255}, config
    # without an ignore label: warps repeat the edge, cutout is refused
    _, mask = Policy([{"type": "shift", "p": 1.0, "fraction": 0.5}], NO_IGNORE)(
        tf.constant(images[0, :16, :16]), tf.constant(masks[0, :16, :16] - 2), tf.constant([0, 1]))
    assert set(np.unique(mask.numpy())) == {1}
    with pytest.raises(SpecError, match="cutout: the task has no ignore_label"):
        Policy([{"type": "cutout"}], NO_IGNORE)


def test_copy_paste_pastes_the_named_class_and_names_the_classes_of_a_wrong_one() -> None:
    import tensorflow as tf

    from ablate.augment import Policy

    images, masks = rgb_pair()
    masks[1:, :, 84:] = 2  # only image 0 holds cars
    policy = Policy([AUG_CONFIGS["copy_paste"]], RGB7)
    policy.prepare(images, masks)
    _, mask = policy(tf.constant(images[3]), tf.constant(masks[3]), tf.constant([0, 3]))
    assert (mask.numpy() == 6).sum() > 0
    with pytest.raises(SpecError, match=r"copy_paste.class_name names class 'big_rock'.*void, grass, road"):
        Policy([{"type": "copy_paste"}], RGB7)  # the Mars default names a class RGB7 lacks
    with pytest.raises(SpecError, match="ignore label"):
        Policy([{"type": "copy_paste", "class_name": "background"}], MARS)


# --- a short fit on an RGB 7-class task ------------------------------------------------------------

def test_a_one_epoch_fit_on_an_rgb_seven_class_task_logs_every_scored_class(tmp_path) -> None:  # noqa: ANN001
    from helpers import PRESET, TINY_MODEL

    from ablate import load_all
    from ablate.runner import summarize
    from ablate.spec import load_spec
    from ablate.train import Split, fit

    load_all()
    images, masks = rgb_pair(48)
    split = Split(images[:40], masks[:40], images[40:], masks[40:], "rgb7", "synthetic", task=RGB7)
    spec = load_spec(PRESET, [*TINY_MODEL, "train.epochs=1", "train.batch_size=8", "train.early_stopping=0",
                              "tracking.log_model=false", "loss={type: sum, terms: [{loss: {type: ce}}, "
                              "{loss: {type: dice}}]}", "augment=[{type: hflip, p: 0.5}, {type: cutout, p: 0.5}]"])
    result = fit(spec, split, verbose=0)
    assert result.model.output_shape == (None, 48, 96, 7)
    names = {f"val_iou_{n}" for n in RGB7.scored_names}
    assert len(names) == 7 and names <= set(result.history)
    assert np.isfinite(result.history["loss"][0])
    summary = summarize(result.model, split, result)
    assert {f"best_val_iou_{n}" for n in RGB7.scored_names} <= set(summary)
    assert set(result.extras["per_image"].columns) == {"index", "miou", *(f"iou_{n}" for n in RGB7.scored_names)}
    assert summary["best_val_miou"] == pytest.approx(result.best["val_miou"], abs=1e-5)


# --- study objectives name the task's classes --------------------------------------------------

def test_study_objectives_must_name_a_scored_class_of_the_study_task() -> None:
    from ablate.study.space import Objective, StudyDef

    def plan(base: dict, metric: str) -> StudyDef:
        return StudyDef("s", base, {}, [Objective(metric=metric)], {"type": "tpe"}, {"type": "none"}, 1)

    rgb = {"task": RGB7.to_dict(), "data": {"path": None}}
    assert plan(rgb, "val_iou_car").task == RGB7
    with pytest.raises(SpecError, match=r"'val_iou_soil' is not logged for this study's task; expected one of "
                                        r"val_miou, val_iou_void, .*val_iou_car"):
        plan(rgb, "val_iou_soil")
    with pytest.raises(SpecError, match="val_iou_car"):
        plan({"data": {"path": None}}, "val_iou_car")  # the synthetic default is the Mars task
    inferred = plan({"data": {"path": "any.npz"}}, "val_iou_car")  # the data decides: checked by the trial
    assert inferred.task is None and inferred.report_metric == "val_iou_car"
    with pytest.raises(SpecError, match=r"'val_iou_car' was not logged by this trial; its task logs val_iou_soil"):
        inferred.values({"best_val_miou": 0.5, "best_val_iou_soil": 0.4})
    with pytest.raises(ValueError, match="unknown metric 'miou'"):
        Objective(metric="miou")


# --- a tracked run logs its task ---------------------------------------------------------------

def test_a_tracked_run_logs_task_json_and_the_tasks_per_class_figures(tmp_path) -> None:  # noqa: ANN001
    import json

    import mlflow
    import pandas as pd
    from helpers import PRESET, TINY_MODEL
    from mlflow.tracking import MlflowClient

    from ablate import load_all, tracking
    from ablate.runner import PER_IMAGE_ARTIFACT, run_spec
    from ablate.spec import load_spec
    from ablate.task import TASK_FILE, task_from_dict

    load_all()
    images, masks = rgb_pair(40)
    data = tmp_path / "rgb7.npz"
    np.savez(data, images=images, masks=masks)
    previous = mlflow.get_tracking_uri()
    tracking.setup(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        spec = load_spec(PRESET, [f"data.path={data}", *TINY_MODEL, "train.epochs=1", "train.batch_size=8",
                                  "tracking.mask_every=1", "tracking.mask_images=2", "tracking.log_model=false",
                                  f"task={json.dumps(RGB7.to_dict())}"])
        outcome = run_spec(spec, experiment="rgb7", verbose=0)
        client = MlflowClient()
        logged_text = Path(client.download_artifacts(outcome.run_id, TASK_FILE, str(tmp_path))).read_text()
        logged = task_from_dict(json.loads(logged_text))
        frame = pd.read_parquet(client.download_artifacts(outcome.run_id, PER_IMAGE_ARTIFACT, str(tmp_path)))
        metrics = client.get_run(outcome.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(previous)
    assert logged == RGB7 and logged_text == RGB7.file_text()  # the text an export writes too
    assert list(frame.columns) == ["index", "miou", *(f"iou_{n}" for n in RGB7.scored_names)]
    assert {f"best_val_iou_{n}" for n in RGB7.scored_names} | {f"val_iou_{n}" for n in RGB7.scored_names} <= set(
        metrics)


def test_figures_use_the_task_colours_names_and_an_ignore_colour() -> None:
    from ablate.ablation.collect import CLASS_METRICS, AblationRecord
    from ablate.tracking import IGNORE_COLOUR, colourize, confusion_figure, legend_entries, mask_grid

    images, masks = rgb_pair(2)
    rgb = colourize(masks, RGB7)
    assert tuple(rgb[0, 0, 0]) == IGNORE_COLOUR and tuple(rgb[0, 10, 90]) == RGB7.palette[6]
    assert [n for n, _ in legend_entries(RGB7)][-2:] == ["car", "255 (not scored)"]
    grid = mask_grid(images, masks, np.minimum(masks, 6), "epoch 1", RGB7)
    assert grid.shape[1] == 3 * 96 + 8 and grid.shape[0] > 2 * 48 + 36  # the legend wraps onto more lines
    np.testing.assert_array_equal(grid[14 : 14 + 48, :96], (np.clip(images[0], 0, 1) * 255).astype(np.uint8))
    fig = confusion_figure(confusion_matrix(masks, np.minimum(masks, 6), task=RGB7), RGB7)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(RGB7.scored_names)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(RGB7.classes)
    assert CLASS_METRICS == ["best_val_iou_soil", "best_val_iou_bedrock", "best_val_iou_sand", "best_val_iou_big_rock"]
    record = AblationRecord("p", "0", {"name": "x"}, None, RGB7)  # type: ignore[arg-type]
    assert record.class_metrics == [f"best_val_iou_{n}" for n in RGB7.classes]
