"""The Keras callback that logs a run's epochs: metrics every epoch, the mask grid every N."""

from __future__ import annotations

from typing import Any

import keras
import mlflow
import numpy as np

from ablate import resilience
from ablate.task import MARS, Task
from ablate.tracking import _as_float, log_metrics, mask_grid
from ablate.train import masks_at, recorded_masks


class MlflowLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics and, every ``mask_every`` epochs, the mask grid."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, mask_every: int,
                 positions: np.ndarray | None = None, task: Task = MARS) -> None:
        """``positions``: the images' positions in the validation set, to read their masks from the pass;
        ``task``: the grid's colours and legend."""
        super().__init__()
        self.images, self.masks, self.mask_every, self.task = images, masks, mask_every, task
        self.positions = positions if positions is not None else np.empty(0, int)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if np.isfinite(_as_float(v))}
        log_metrics(metrics, step=epoch)
        if self.mask_every and (epoch + 1) % self.mask_every == 0:
            pred = masks_at(recorded_masks(self.model, logs), self.positions) if len(self.positions) else None
            self.log_masks(epoch, pred)

    def log_masks(self, step: int, pred: np.ndarray | None = None) -> np.ndarray:
        """Logs the grid of the fixed images' predicted masks ``pred`` (k, H, W), and returns them.

        ``pred`` comes from the validation pass (``ablate.train.recorded_masks``: no extra forward
        pass); without it the model predicts the images in one eager call. The grid is rendered
        and encoded on the delivery thread, off the training loop.
        """
        if pred is None or len(pred) != len(self.images):
            pred = np.argmax(keras.ops.convert_to_numpy(self.model(self.images, training=False)),
                             axis=-1).astype(np.uint8)
        images, masks, title, task = self.images, self.masks, f"epoch {step + 1}", self.task
        delivery = resilience.current()
        if delivery is not None:
            delivery.log_image(lambda: mask_grid(images, masks, pred, title, task), key="masks", step=step)
        else:
            mlflow.log_image(mask_grid(images, masks, pred, title, task), key="masks", step=step)
        return pred
