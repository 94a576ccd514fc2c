"""Scoring without TensorFlow: confusion matrices and IoU in NumPy, for any :class:`~ablate.task.Task`.

The rule (``ablate.task``): pixels whose ground truth is the task's ignore label are not scored;
every other pixel counts for its true class and against the class it is predicted as; classes
absent from both truth and prediction are left out of the mean, which is over the task's scored
classes. On Mars (the default task) that is the mean IoU over classes 1-4 on labelled pixels: a
labelled pixel predicted as 0 counts against its true class. ``ablate.metrics`` streams the same
rule inside Keras; this module is what reports, figures and the tracking code use, so they start
without TensorFlow.

A confusion matrix is (C, C) over the task's classes, rows truth, columns prediction. A truth
pixel holding an ignore label outside the classes (255) has no row and is dropped when counting;
an ignore label that is a class (Mars 0) keeps its row, which the IoU functions leave out.
"""

from __future__ import annotations

import numpy as np

from ablate.task import MARS, Task


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None,
                     task: Task = MARS) -> np.ndarray:
    """Counts (true, predicted) pairs of the task's classes; rows are truth, columns prediction.

    Truth pixels holding an ignore label outside the classes are not counted. ``num_classes``
    is the old spelling of ``task.num_classes`` (Mars) and must agree with the task when given.

    Example:
        >>> t = Task(height=4, width=4, classes=["a", "b"], ignore_label=255)
        >>> confusion_matrix(np.array([0, 1, 255]), np.array([0, 0, 1]), task=t).tolist()
        [[1, 0], [1, 0]]
    """
    c = _classes(task, num_classes)
    t, p = _flat_pair(y_true, y_pred, task)
    return np.bincount(t * c + p, minlength=c**2)[: c**2].reshape(c, c)


def _classes(task: Task, num_classes: int | None) -> int:
    if num_classes is not None and num_classes != task.num_classes:
        raise ValueError(f"num_classes={num_classes} disagrees with the task's {task.num_classes} classes; "
                         f"pass task=Task(...) for another task.")
    return task.num_classes


def _flat_pair(y_true: np.ndarray, y_pred: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Flattened int64 truth and prediction, with the pixels of an out-of-class ignore label dropped."""
    t = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_pred).astype(np.int64).ravel()
    if task.ignore_label is not None and not task.ignore_is_class:
        keep = t != task.ignore_label
        if not keep.all():
            t, p = t[keep], p[keep]
    return t, p


def _scored_rows(cm: np.ndarray, task: Task) -> np.ndarray:
    """The confusion counts (..., C, C) as float64, with the ignore class's truth row zeroed."""
    cm = np.array(cm, dtype=np.float64)
    if cm.shape[-2:] != (task.num_classes, task.num_classes):
        raise ValueError(f"confusion counts of shape {cm.shape[-2:]} for a task of {task.num_classes} classes; "
                         f"expected ({task.num_classes}, {task.num_classes}).")
    if task.ignore_is_class:
        cm[..., task.ignore_label, :] = 0.0  # pixels whose truth is the ignore class are not scored
    return cm


def iou_from_confusion(cm: np.ndarray, task: Task = MARS) -> tuple[float, dict[int, float]]:
    """(mean IoU over the scored classes present, {scored label: IoU}); an absent class's IoU is nan.

    Example:
        >>> iou_from_confusion(np.array([[5, 1, 0, 0, 0], [0, 2, 0, 0, 0], [0, 2, 2, 0, 0],
        ...                              [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]))[0]  # soil 2/4, bedrock 2/4
        0.5
    """
    ious = _iou(_scored_rows(cm, task), task)
    per_class = {k: float(v) for k, v in zip(task.scored_ids, ious, strict=True)}
    present = [v for v in per_class.values() if not np.isnan(v)]
    return (float(np.mean(present)) if present else float("nan")), per_class


def _iou(cm: np.ndarray, task: Task) -> np.ndarray:
    """IoU of each scored class from (..., C, C) counts whose ignore row is zeroed; nan where 0/0."""
    ids = list(task.scored_ids)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)[..., ids]
    union = cm.sum(axis=-1)[..., ids] + cm.sum(axis=-2)[..., ids] - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def per_image_iou(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None,
                  task: Task = MARS) -> np.ndarray:
    """IoU of every scored class in every image, on the scored pixels.

    The dataset-level rule applied to one image at a time: pixels whose truth is the ignore
    label are not scored, a scored pixel predicted as another class (the ignore class too)
    counts against its true class, and a class that is neither in the image's truth nor
    predicted on its scored pixels has no IoU (nan), because 0/0 says nothing about the model.
    A class predicted but absent from the truth scores 0. The per-image mIoU is the mean of the
    non-nan entries of a row (:func:`per_image_miou`); it is nan only for an image without
    scored pixels. Its mean over images is not the dataset mIoU, which pools pixels of all
    images before dividing.

    Args:
        y_true: (N, ...) integer truth masks holding ``task.valid_labels``.
        y_pred: predicted labels in ``[0, task.num_classes)``, the same shape as ``y_true``.
        num_classes: the old spelling of ``task.num_classes``; must agree with the task.
        task: the task (Mars by default).

    Returns:
        (N, S) float64, S = ``len(task.scored_ids)``; column j holds class ``task.scored_ids[j]``'s
        IoU (Mars: column ``k - 1`` holds class k).

    Raises:
        ValueError: the shapes differ, there is no image axis, or a label is out of range.

    Example:
        >>> t = np.array([[[1, 1, 0, 2]]])
        >>> p = np.array([[[1, 2, 2, 2]]])
        >>> per_image_iou(t, p)[0, :2].tolist()  # soil 1/2, bedrock 1/2; pixel 3 ignored
        [0.5, 0.5]
    """
    c = _classes(task, num_classes)
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim < 2:
        raise ValueError(f"per_image_iou needs y_true and y_pred of one shape (N, ...); got {t.shape} and {p.shape}.")
    if p.size and (p.min() < 0 or p.max() >= c):
        raise ValueError(f"y_pred labels must be in [0, {c}); got {p.min()}..{p.max()}.")
    if t.size:
        bad = ~np.isin(t, task.valid_labels)
        if bad.any():
            raise ValueError(f"y_true labels must be in [0, {c})" + (
                f" or the ignore label {task.ignore_label}" if task.ignore_label is not None else "")
                + f"; got {t[bad].ravel()[0]}.")
    pixels = int(np.prod(t.shape[1:]))
    t, p = t.reshape(len(t), pixels), p.reshape(len(p), pixels)
    cm = np.concatenate([_image_confusions(t[i : i + _IMAGE_CHUNK], p[i : i + _IMAGE_CHUNK], task)
                         for i in range(0, len(t), _IMAGE_CHUNK)] or [np.zeros((0, c, c))])
    return iou_from_image_confusions(cm, task)


def iou_from_image_confusions(confusions: np.ndarray, task: Task = MARS) -> np.ndarray:
    """:func:`per_image_iou` from each image's (C, C) confusion counts (rows truth, columns prediction).

    This is how a run gets its per-image IoUs from the validation pass itself (the mIoU metric
    keeps every image's counts, ``ablate.metrics.MeanIoU(record_images=N)``).
    """
    confusions = np.asarray(confusions)
    if confusions.ndim != 3:
        raise ValueError(f"iou_from_image_confusions needs (N, C, C) counts; got shape {confusions.shape}.")
    return _iou(_scored_rows(confusions, task), task)


_IMAGE_CHUNK = 256  # images per bincount: bounds the int64 index array (~17 MB at 64x128)


def _image_confusions(t: np.ndarray, p: np.ndarray, task: Task) -> np.ndarray:
    """(n, C, C) confusion matrices of n flattened images, in one bincount.

    Truth pixels of an ignore label outside the classes land in an extra row C, dropped after.
    """
    n, c = len(t), task.num_classes
    rows = c + 1 if task.ignore_label is not None and not task.ignore_is_class else c
    t = t.astype(np.int64)
    if rows > c:
        t = np.where(t == task.ignore_label, c, t)
    image = np.arange(n, dtype=np.int64)[:, None]
    flat = (image * rows + t) * c + p.astype(np.int64)
    return np.bincount(flat.ravel(), minlength=n * rows * c).reshape(n, rows, c)[:, :c, :]


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
