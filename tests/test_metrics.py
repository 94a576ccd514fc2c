"""The labelled-pixel mean IoU against a direct numpy computation written here."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ablate.metrics import MeanIoU, confusion_matrix, iou_from_confusion, segmentation_metrics
from ablate.task import MARS


def reference_iou(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, dict[int, float]]:
    """Mean and per-class IoU over classes 1-4 on pixels whose truth is labelled (not 0).

    A labelled pixel predicted 0 is a miss for its class; a class absent from both the truth
    and the prediction (on labelled pixels) is left out of the mean.
    """
    labelled = y_true > 0
    t, p = y_true[labelled], y_pred[labelled]
    per_class = {}
    for k in range(1, MARS.num_classes):
        union = np.sum((t == k) | (p == k))
        if union:
            per_class[k] = float(np.sum((t == k) & (p == k)) / union)
    mean = float(np.mean(list(per_class.values()))) if per_class else math.nan
    return mean, per_class


def one_hot_probs(pred: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random softmax-like probabilities whose argmax is ``pred``."""
    probs = rng.uniform(0.0, 0.5, size=(*pred.shape, MARS.num_classes)).astype(np.float32)
    np.put_along_axis(probs, pred[..., None].astype(np.int64), 1.0, axis=-1)
    return probs / probs.sum(axis=-1, keepdims=True)


def streamed(metric: MeanIoU, truth: np.ndarray, pred: np.ndarray, batch: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    metric.reset_state()
    for i in range(0, len(truth), batch):
        metric.update_state(truth[i:i + batch], one_hot_probs(pred[i:i + batch], rng))
    return float(metric.result())


def random_masks(seed: int, n: int = 10, shape: tuple[int, int] = (16, 24), absent: tuple[int, ...] = ()
                 ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = [k for k in range(MARS.num_classes) if k not in absent]
    truth = rng.choice(classes, size=(n, *shape), p=None).astype(np.uint8)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.4  # 40% of pixels predicted at random
    pred[flip] = rng.choice(classes, size=int(flip.sum()))
    return truth, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_metric_matches_numpy_on_random_data(seed: int) -> None:
    truth, pred = random_masks(seed)
    mean, per_class = reference_iou(truth, pred)
    assert 0.2 < mean < 0.9  # a non-trivial case
    assert streamed(MeanIoU(), truth, pred, batch=3, seed=seed) == pytest.approx(mean, abs=1e-6)
    for k, iou in per_class.items():
        assert streamed(MeanIoU(class_id=k), truth, pred, batch=4, seed=seed) == pytest.approx(iou, abs=1e-6)
    cm_mean, cm_per_class = iou_from_confusion(confusion_matrix(truth, pred))
    assert cm_mean == pytest.approx(mean, abs=1e-12)
    assert {k: v for k, v in cm_per_class.items() if not math.isnan(v)} == pytest.approx(per_class, abs=1e-12)


def test_streaming_accumulates_instead_of_averaging_batches() -> None:
    # Batch 1: one soil pixel, right (the rest is background truth, ignored); batch 2: four soil
    # pixels predicted 0. Over both: IoU 1/5, not the mean of the batch IoUs (1 + 0) / 2.
    truth = np.array([[[1, 0, 0, 0]], [[1, 1, 1, 1]]], np.uint8)
    pred = np.array([[[1, 0, 0, 0]], [[0, 0, 0, 0]]], np.uint8)
    assert reference_iou(truth, pred)[0] == pytest.approx(0.2)
    assert streamed(MeanIoU(), truth, pred, batch=1) == pytest.approx(0.2)


def test_background_truth_is_ignored_but_predicting_background_counts() -> None:
    truth = np.array([[[1, 1, 1, 1, 0, 0]]], np.uint8)
    pred = np.array([[[1, 1, 0, 0, 2, 2]]], np.uint8)  # two soil pixels lost to 0; class 2 only on background
    mean, per_class = reference_iou(truth, pred)
    assert per_class == {1: 0.5} and mean == 0.5  # class 2 is absent from labelled pixels: left out
    assert streamed(MeanIoU(), truth, pred, batch=1) == pytest.approx(0.5)
    assert iou_from_confusion(confusion_matrix(truth, pred))[0] == pytest.approx(0.5)


def test_a_class_absent_from_truth_and_prediction_is_left_out() -> None:
    truth, pred = random_masks(5, absent=(4,))
    mean, per_class = reference_iou(truth, pred)
    assert 4 not in per_class
    assert streamed(MeanIoU(), truth, pred, batch=5) == pytest.approx(mean, abs=1e-6)
    cm_mean, cm_per_class = iou_from_confusion(confusion_matrix(truth, pred))
    assert math.isnan(cm_per_class[4]) and cm_mean == pytest.approx(mean, abs=1e-12)


def test_a_class_predicted_but_never_true_counts_as_zero() -> None:
    truth = np.full((1, 2, 2), 1, np.uint8)
    pred = np.array([[[1, 1], [1, 3]]], np.uint8)
    mean, per_class = reference_iou(truth, pred)
    assert per_class == {1: 0.75, 3: 0.0} and mean == pytest.approx(0.375)
    assert streamed(MeanIoU(), truth, pred, batch=1) == pytest.approx(0.375)
    assert iou_from_confusion(confusion_matrix(truth, pred))[0] == pytest.approx(0.375)


def test_all_background_truth() -> None:
    truth = np.zeros((2, 8, 8), np.uint8)
    pred = np.random.default_rng(0).integers(0, MARS.num_classes, truth.shape).astype(np.uint8)
    mean, per_class = iou_from_confusion(confusion_matrix(truth, pred))
    assert math.isnan(mean) and all(math.isnan(v) for v in per_class.values())
    assert streamed(MeanIoU(), truth, pred, batch=1) == 0.0  # finite, so callbacks monitoring it never see NaN


def test_perfect_prediction() -> None:
    truth, _ = random_masks(3)
    assert streamed(MeanIoU(), truth, truth, batch=4) == pytest.approx(1.0)
    for k in range(1, MARS.num_classes):
        assert streamed(MeanIoU(class_id=k), truth, truth, batch=4) == pytest.approx(1.0)
    mean, per_class = iou_from_confusion(confusion_matrix(truth, truth))
    assert mean == 1.0 and set(per_class.values()) == {1.0}


def test_reset_state_forgets_earlier_batches() -> None:
    metric = MeanIoU()
    truth, pred = random_masks(7)
    streamed(metric, truth, np.zeros_like(pred), batch=5)
    assert streamed(metric, truth, truth, batch=5) == pytest.approx(1.0)


def test_metric_inside_compiled_evaluate_matches_numpy() -> None:
    """The graph-mode path Keras uses during fit/evaluate, streamed over uneven batches."""
    truth, pred = random_masks(11, n=13)
    probs = one_hot_probs(pred, np.random.default_rng(0))
    model = keras.Sequential([keras.Input(truth.shape[1:] + (MARS.num_classes,)), keras.layers.Identity()])
    model.compile(loss="sparse_categorical_crossentropy", metrics=segmentation_metrics())
    results = model.evaluate(probs, truth, batch_size=4, verbose=0, return_dict=True)
    mean, per_class = reference_iou(truth, pred)
    assert results["miou"] == pytest.approx(mean, abs=1e-6)
    names = {1: "iou_soil", 2: "iou_bedrock", 3: "iou_sand", 4: "iou_big_rock"}
    for k, iou in per_class.items():
        assert results[names[k]] == pytest.approx(iou, abs=1e-6)


def test_config_round_trip() -> None:
    metric = MeanIoU(class_id=2)
    clone = MeanIoU.from_config(metric.get_config())
    assert (clone.name, clone.class_id, clone.num_classes) == ("iou_bedrock", 2, MARS.num_classes)
    assert keras.saving.get_registered_object("ablate>MeanIoU") is MeanIoU


def _kept_after_pass(truth: np.ndarray, pred: np.ndarray, positions: tuple[int, ...], record: int,
                     batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs a compiled evaluate (graph mode, uneven last batch) and returns the metric's kept masks."""
    probs = one_hot_probs(pred, np.random.default_rng(1))
    model = keras.Sequential([keras.Input(truth.shape[1:] + (MARS.num_classes,)), keras.layers.Identity()])
    model.compile(loss="sparse_categorical_crossentropy",
                  metrics=segmentation_metrics(record_images=record, sample_positions=positions,
                                               sample_shape=truth.shape[1:]))
    model.evaluate(probs, truth, batch_size=batch, verbose=0)
    metric = next(m for m in model.metrics[-1].metrics if isinstance(m, MeanIoU) and m.sample_positions)
    return metric.kept_masks()


@pytest.mark.parametrize("batch", [1, 4, 5, 13])
@pytest.mark.parametrize("positions", [(0, 4, 5, 12), tuple(range(13))])
def test_kept_masks_are_the_predicted_masks_at_their_positions(batch: int, positions: tuple[int, ...]) -> None:
    """The mask grids' and the report's predictions, kept from the pass, not a second forward pass:
    position i holds the argmax of image i, the first and last image included."""
    truth, pred = random_masks(3, n=13)
    kept_positions, kept = _kept_after_pass(truth, pred, positions, 13, batch)
    assert kept_positions.tolist() == list(positions) and kept.dtype == np.uint8
    np.testing.assert_array_equal(kept, pred[list(positions)])


def test_a_pass_longer_than_the_record_keeps_the_first_images() -> None:
    """A training pass runs past N images: those past N go to the spare row, not over kept ones."""
    truth, pred = random_masks(4, n=20)
    _, kept = _kept_after_pass(truth, pred, (0, 9), 10, batch=6)
    np.testing.assert_array_equal(kept, pred[[0, 9]])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sample_positions": (0,), "sample_shape": (4, 4)}, "record_images"),
    ({"record_images": 3, "sample_positions": (0,)}, "sample_shape"),
    ({"record_images": 3, "sample_positions": (0, 3), "sample_shape": (4, 4)}, "0..2"),
    ({"record_images": 3, "sample_positions": (1, 1), "sample_shape": (4, 4)}, "distinct"),
])
def test_kept_positions_need_a_record_a_shape_and_distinct_positions_inside_it(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MeanIoU(**kwargs)


def test_a_switched_off_record_keeps_nothing_and_survives_a_reset() -> None:
    """``recording`` 0 (a fit's training passes) skips the per-image counts and kept masks, not the
    confusion matrix the mIoU is read from; resetting the metric for the next pass keeps the switch."""
    truth, pred = random_masks(5, n=6)
    probs = one_hot_probs(pred, np.random.default_rng(2))
    metric = MeanIoU(record_images=6, sample_positions=(0, 5), sample_shape=truth.shape[1:])
    metric.recording.assign(0)
    metric.update_state(truth, probs)
    assert int(metric.seen.numpy()) == 0 and not metric.images.numpy().any() and not metric.samples.numpy().any()
    assert metric.cm.numpy().sum() > 0
    metric.reset_state()
    assert int(metric.recording.numpy()) == 0
    metric.recording.assign(1)
    metric.update_state(truth, probs)
    assert int(metric.seen.numpy()) == 6
    np.testing.assert_array_equal(metric.kept_masks()[1], pred[[0, 5]])
