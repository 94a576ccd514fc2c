"""Mean IoU over classes 1-4 on labelled pixels, streamed from a confusion matrix.

Pixels whose ground truth is 0 are ignored; a labelled pixel predicted as 0 counts against
its true class; classes absent from both truth and prediction are left out of the mean.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from core.scoring import (  # noqa: F401  (re-exported: the NumPy side of the same rule)
    CLASS_COLOURS,
    CLASS_NAMES,
    NUM_CLASSES,
    confusion_matrix,
    iou_from_confusion,
    per_image_iou,
    per_image_miou,
)


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
