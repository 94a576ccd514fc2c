"""Mean IoU over classes 1-4 on labelled pixels, streamed from a confusion matrix.

Pixels whose ground truth is 0 are ignored; a labelled pixel predicted as 0 counts against
its true class; classes absent from both truth and prediction are left out of the mean.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

NUM_CLASSES = 5
CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big_rock")
CLASS_COLOURS = ((0, 0, 0), (196, 120, 60), (120, 120, 140), (235, 200, 90), (220, 40, 40))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts (true, predicted) pairs; rows are truth, columns prediction."""
    idx = y_true.astype(np.int64).ravel() * num_classes + y_pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> tuple[float, dict[int, float]]:
    """(mean IoU over classes 1.., per-class IoU) with class-0 ground truth ignored."""
    cm = np.asarray(cm, dtype=np.float64)[1:]  # drop rows whose truth is background
    per_class: dict[int, float] = {}
    for k in range(1, cm.shape[1]):
        tp = cm[k - 1, k]
        union = cm[k - 1].sum() + cm[:, k].sum() - tp
        per_class[k] = float(tp / union) if union > 0 else float("nan")
    present = [v for v in per_class.values() if not np.isnan(v)]
    return (float(np.mean(present)) if present else float("nan")), per_class


class MeanIoU(keras.metrics.Metric):
    """Streaming labelled-pixel mean IoU; also reports per-class IoU with ``class_id``.

    Args:
        class_id: None for the mean over classes 1-4, or k to report class k's IoU.
    """

    def __init__(self, class_id: int | None = None, num_classes: int = NUM_CLASSES, name: str | None = None,
                 **kwargs: Any) -> None:
        name = name or ("miou" if class_id is None else f"iou_{CLASS_NAMES[class_id]}")
        super().__init__(name=name, **kwargs)
        self.class_id = class_id
        self.num_classes = num_classes
        self.cm = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", name="cm", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        y_pred = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        # A one-hot product instead of bincount: XLA (train.jit_compile) cannot compile bincount.
        t = ops.one_hot(y_true, self.num_classes, dtype="float32")
        p = ops.one_hot(y_pred, self.num_classes, dtype="float32")
        self.cm.assign_add(ops.matmul(ops.transpose(t), p))

    def result(self) -> Any:
        cm = self.cm[1:]
        tp = ops.stack([cm[k - 1, k] for k in range(1, self.num_classes)])
        union = ops.sum(cm, axis=1) + ops.sum(cm, axis=0)[1:] - tp
        iou = tp / ops.maximum(union, 1.0)
        if self.class_id is not None:
            return iou[self.class_id - 1]
        present = ops.cast(union > 0, "float32")
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self) -> None:
        self.cm.assign(ops.zeros_like(self.cm))

    def get_config(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "num_classes": self.num_classes, "name": self.name}


keras.saving.register_keras_serializable(package="ablate", name="MeanIoU")(MeanIoU)


def segmentation_metrics() -> list[keras.metrics.Metric]:
    """mIoU plus one IoU metric per labelled class (logged as val_iou_soil, ...)."""
    return [MeanIoU()] + [MeanIoU(class_id=k) for k in range(1, NUM_CLASSES)]


def per_image_iou(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """IoU of every scored class (1..num_classes-1) in every image, on labelled pixels.

    The dataset-level rule applied to one image at a time: pixels whose truth is 0 are ignored,
    a labelled pixel predicted as 0 counts against its true class, and a class that is neither
    in the image's truth nor predicted on its labelled pixels has no IoU (nan), because 0/0 says
    nothing about the model. A class predicted but absent from the truth scores 0. The
    per-image mIoU is the mean of the non-nan entries of a row (:func:`per_image_miou`); it is
    nan only for an image without labelled pixels. Its mean over images is not the dataset
    mIoU, which pools pixels of all images before dividing.

    Args:
        y_true: (N, ...) integer truth masks with labels in ``[0, num_classes)``.
        y_pred: predicted labels, the same shape as ``y_true``.
        num_classes: number of labels including the ignored label 0.

    Returns:
        (N, num_classes - 1) float64; column ``k - 1`` holds class ``k``'s IoU.

    Raises:
        ValueError: the shapes differ, there is no image axis, or a label is out of range.

    Example:
        >>> t = np.array([[[1, 1, 0, 2]]])
        >>> p = np.array([[[1, 2, 2, 2]]])
        >>> per_image_iou(t, p)[0, :2].tolist()  # soil 1/2, bedrock 1/2; pixel 3 ignored
        [0.5, 0.5]
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim < 2:
        raise ValueError(f"per_image_iou needs y_true and y_pred of one shape (N, ...); got {t.shape} and {p.shape}.")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} labels must be in [0, {num_classes}); got {a.min()}..{a.max()}.")
    pixels = int(np.prod(t.shape[1:]))
    t, p = t.reshape(len(t), pixels), p.reshape(len(p), pixels)
    cm = np.concatenate([_image_confusions(t[i : i + _IMAGE_CHUNK], p[i : i + _IMAGE_CHUNK], num_classes)
                         for i in range(0, len(t), _IMAGE_CHUNK)] or [np.zeros((0, num_classes, num_classes))])
    cm = cm[:, 1:, :].astype(np.float64)  # drop truth-0 rows: unlabelled pixels are not scored
    tp = np.diagonal(cm[:, :, 1:], axis1=1, axis2=2)
    union = cm.sum(axis=2) + cm[:, :, 1:].sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


_IMAGE_CHUNK = 256  # images per bincount: bounds the int64 index array (~17 MB at 64x128)


def _image_confusions(t: np.ndarray, p: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, C, C) confusion matrices of n flattened images, in one bincount."""
    n = len(t)
    image = np.arange(n, dtype=np.int64)[:, None]
    flat = (image * num_classes + t.astype(np.int64)) * num_classes + p.astype(np.int64)
    return np.bincount(flat.ravel(), minlength=n * num_classes**2).reshape(n, num_classes, num_classes)


def per_image_miou(ious: np.ndarray) -> np.ndarray:
    """Row means of :func:`per_image_iou` over the classes that have an IoU; nan for an empty row.

    Example:
        >>> per_image_miou(np.array([[0.5, np.nan], [np.nan, np.nan]])).tolist()
        [0.5, nan]
    """
    ious = np.asarray(ious, dtype=np.float64)
    present = ~np.isnan(ious)
    count = present.sum(axis=1)
    total = np.where(present, ious, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
