"""Scoring, losses, augmentations and a short fit for any task: Mars, an RGB 7-class task whose
ignore label (255) is outside the classes, and a task without an ignore label.

The reference here is written directly from the rule (``ablate.task``): pixels whose truth is
the ignore label are not scored, every other pixel counts for its true class and against its
predicted class, the mean is over the scored classes present in truth or prediction.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

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
