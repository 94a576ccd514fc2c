"""Mean IoU over a task's scored classes, streamed from a confusion matrix.

The rule of ``ablate.scoring`` (and ``ablate.task``): pixels whose ground truth is the task's
ignore label are not scored; a scored pixel predicted as another class counts against its true
class; classes absent from both truth and prediction are left out of the mean. On Mars (the
default): classes 1-4 on labelled pixels, a labelled pixel predicted as 0 counting against its class.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ablate.scoring import (  # noqa: F401  (re-exported: the NumPy side of the same rule)
    confusion_matrix,
    iou_from_confusion,
    per_image_iou,
    per_image_miou,
)
from ablate.task import MARS, Task, task_from_dict


class MeanIoU(keras.metrics.Metric):
    """Streaming labelled-pixel mean IoU; also reports per-class IoU with ``class_id``.

    With ``record_images=N`` the metric also keeps, for the current pass, the confusion counts
    of each of its first N images (``images``, shape (N, C, C)). During ``fit`` the metric is
    reset before each validation pass and the validation set is read in file order, so at the
    end of an epoch ``images[i]`` holds validation image i's counts: the run's confusion matrix
    and per-image IoUs at the best epoch come from the validation pass that chose it, with no
    second pass over the validation set after training (``ablate.train.ValidationRecord``).

    With ``sample_positions`` (and ``sample_shape``, the masks' height and width) it also keeps
    the predicted mask of the images at those positions of the pass (``samples``, shape
    (k + 1, H, W); row k takes the masks of other positions and is never read; see
    ``kept_masks``): the epoch's mask grid, the run's final grid and the report's image figures
    come from the validation pass itself, with no extra forward pass of the model (an eager call
    costs about 0.4 s on a CPU per grid, and reloading a run's model for the report about 2 s).

    Args:
        class_id: None for the mean over the task's scored classes, or a scored label k to report
            class k's IoU (named ``iou_<class name>``).
        num_classes: the old spelling of ``task.num_classes`` (saved Mars models); must agree.
        task: the task whose ignore label and scored classes the metric follows (Mars by default).
        record_images: images whose counts are kept per pass (0: none).
        sample_positions: positions (< ``record_images``) in the pass whose predicted masks are kept.
        sample_shape: (height, width) of a mask, with ``sample_positions``.
    """

    def __init__(self, class_id: int | None = None, num_classes: int | None = None, name: str | None = None,
                 record_images: int = 0, sample_positions: tuple[int, ...] | list[int] = (),
                 sample_shape: tuple[int, int] | list[int] | None = None,
                 task: Task | dict[str, Any] | None = None, **kwargs: Any) -> None:
        task = MARS if task is None else task_from_dict(task, "MeanIoU task")
        if num_classes is not None and num_classes != task.num_classes:
            raise ValueError(f"MeanIoU(num_classes={num_classes}) disagrees with its task's {task.num_classes} "
                             f"classes; pass task=Task(...) alone.")
        if class_id is not None and class_id not in task.scored_ids:
            raise ValueError(f"MeanIoU(class_id={class_id}) is not a scored class; expected one of "
                             f"{', '.join(f'{k} ({task.classes[k]})' for k in task.scored_ids)}.")
        name = name or ("miou" if class_id is None else f"iou_{task.classes[class_id]}")
        super().__init__(name=name, **kwargs)
        self.class_id = class_id
        self.task = task
        num_classes = self.num_classes = task.num_classes
        # Truth pixels of an ignore label outside the classes (255) are masked out before one_hot.
        self._mask_label = task.ignore_label if task.ignore_label is not None and not task.ignore_is_class else None
        self.record_images = int(record_images)
        self.cm = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", name="cm", dtype="float32")
        if self.record_images:
            # float32 counts are exact here: at most H*W (8,192) pixels per image and cell.
            self.images = self.add_variable(shape=(self.record_images, num_classes, num_classes),
                                            initializer="zeros", name="images", dtype="float32")
            self.seen = self.add_variable(shape=(), initializer="zeros", name="seen", dtype="int32")
            # 1: batches are recorded (the default); 0: not, as in a fit's training passes after the
            # first, whose images the record would not keep (``ablate.train.ValidationRecord`` switches it).
            self.recording = self.add_variable(shape=(), initializer="ones", name="recording", dtype="int32")
        self.sample_positions = tuple(int(i) for i in sample_positions)
        self.sample_shape = tuple(int(n) for n in sample_shape) if sample_shape is not None else None
        if self.sample_positions:
            if not self.record_images or self.sample_shape is None or len(self.sample_shape) != 2:
                raise ValueError("MeanIoU(sample_positions=...) needs record_images > 0 and sample_shape=(H, W)")
            if len(set(self.sample_positions)) != len(self.sample_positions) or not all(
                    0 <= i < self.record_images for i in self.sample_positions):
                raise ValueError("MeanIoU(sample_positions=...) must be distinct positions in "
                                 f"0..{self.record_images - 1}")
            k = len(self.sample_positions)
            slot_of = np.full(self.record_images + 1, k, dtype=np.int32)  # position -> row; others -> row k
            slot_of[list(self.sample_positions)] = np.arange(k, dtype=np.int32)
            self._slot_of = slot_of
            self.samples = self.add_variable(shape=(k + 1, *self.sample_shape), initializer="zeros",
                                             name="samples", dtype="int32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        batch = ops.shape(y_true)[0]
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        masks = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        y_pred = ops.reshape(masks, (-1,))
        # A one-hot product instead of bincount: XLA (train.jit_compile) cannot compile bincount.
        if self._mask_label is None:
            t = ops.one_hot(y_true, self.num_classes, dtype="float32")
        else:  # a weight, not a boolean gather: static shapes keep it valid under XLA
            keep = ops.not_equal(y_true, self._mask_label)
            t = ops.one_hot(ops.where(keep, y_true, 0), self.num_classes, dtype="float32")
            t = t * ops.expand_dims(ops.cast(keep, "float32"), -1)
        p = ops.one_hot(y_pred, self.num_classes, dtype="float32")
        self.cm.assign_add(ops.matmul(ops.transpose(t), p))
        if self.record_images:  # a branch that runs only while recording: a training pass skips its cost
            ops.cond(ops.greater(self.recording, 0), lambda: self._record_batch(batch, t, p, masks), lambda: None)

    def _record_batch(self, batch: Any, t: Any, p: Any, masks: Any) -> None:
        if self.sample_positions:
            self._keep_samples(batch, masks)  # before _record moves `seen` on
        self._record(batch, t, p)

    def _record(self, batch: Any, t: Any, p: Any) -> None:
        """Adds each image's counts at its position in the pass; images past N are dropped.

        A one-hot scatter (no dynamic slicing) keeps it valid for any batch size and under XLA.
        """
        c = self.num_classes
        per_image = ops.einsum("bpi,bpj->bij", ops.reshape(t, (batch, -1, c)), ops.reshape(p, (batch, -1, c)))
        position = self.seen + ops.arange(batch, dtype="int32")
        slot = ops.one_hot(position, self.record_images + 1, dtype="float32")[:, : self.record_images]
        self.images.assign_add(ops.einsum("bn,bij->nij", slot, per_image))
        self.seen.assign_add(ops.cast(batch, "int32"))

    def _keep_samples(self, batch: Any, masks: Any) -> None:
        """Writes each image's predicted mask to its row (the spare row k if its position is not kept).

        One scatter of the batch's masks (static shapes: valid under XLA): positions past N
        (a training pass, longer than the validation set) land in the spare row too.
        """
        position = ops.minimum(self.seen + ops.arange(batch, dtype="int32"), self.record_images)
        rows = ops.take(ops.convert_to_tensor(self._slot_of, dtype="int32"), position)
        self.samples.assign(ops.scatter_update(self.samples, ops.expand_dims(rows, 1), masks))

    def kept_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, masks): the kept positions and their predicted masks (k, H, W) uint8 of this pass."""
        return np.asarray(self.sample_positions), self.samples.numpy()[:-1].astype(np.uint8)

    def result(self) -> Any:
        cm = self.cm
        if self.task.ignore_is_class:  # truth of the ignore class (Mars 0) is not scored
            keep_rows = np.ones((self.num_classes, 1), np.float32)
            keep_rows[self.task.ignore_label] = 0.0
            cm = cm * ops.convert_to_tensor(keep_rows)
        ids = list(self.task.scored_ids)
        tp = ops.stack([cm[k, k] for k in ids])
        union = ops.take(ops.sum(cm, axis=1), ids) + ops.take(ops.sum(cm, axis=0), ids) - tp
        iou = tp / ops.maximum(union, 1.0)
        if self.class_id is not None:
            return iou[ids.index(self.class_id)]
        present = ops.cast(union > 0, "float32")
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self) -> None:
        for variable in self.variables:
            if variable is not getattr(self, "recording", None):  # a switch, not a pass's state
                variable.assign(ops.zeros_like(variable))

    def get_config(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "num_classes": self.num_classes, "task": self.task.to_dict(),
                "name": self.name,
                "record_images": self.record_images, "sample_positions": list(self.sample_positions),
                "sample_shape": list(self.sample_shape) if self.sample_shape else None}


keras.saving.register_keras_serializable(package="ablate", name="MeanIoU")(MeanIoU)


def segmentation_metrics(record_images: int = 0, sample_positions: tuple[int, ...] | list[int] = (),
                         sample_shape: tuple[int, int] | None = None, task: Task = MARS) -> list[keras.metrics.Metric]:
    """mIoU plus one IoU metric per scored class of the task (logged as val_iou_soil, ... on Mars).

    ``record_images``: the mIoU metric (the first) also keeps that many images' counts per pass,
    and the predicted masks at ``sample_positions`` (see ``MeanIoU``).
    """
    first = MeanIoU(record_images=record_images, sample_positions=sample_positions, sample_shape=sample_shape,
                    task=task)
    return [first] + [MeanIoU(class_id=k, task=task) for k in task.scored_ids]
