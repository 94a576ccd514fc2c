"""Scoring without TensorFlow: the classes, confusion matrices and IoU in NumPy.

Mean IoU over classes 1-4 on labelled pixels: pixels whose ground truth is 0 are ignored; a
labelled pixel predicted as 0 counts against its true class; classes absent from both truth and
prediction are left out of the mean. ``ablate.metrics`` streams the same rule inside Keras; this
module is what reports, figures and the tracking code use, so they start without TensorFlow.
"""

from __future__ import annotations

import numpy as np

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
    return iou_from_image_confusions(cm)


def iou_from_image_confusions(confusions: np.ndarray) -> np.ndarray:
    """:func:`per_image_iou` from each image's (C, C) confusion counts (rows truth, columns prediction).

    This is how a run gets its per-image IoUs from the validation pass itself (the mIoU metric
    keeps every image's counts, ``ablate.metrics.MeanIoU(record_images=N)``).
    """
    cm = np.asarray(confusions)[:, 1:, :].astype(np.float64)  # drop truth-0 rows: unlabelled pixels are not scored
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
