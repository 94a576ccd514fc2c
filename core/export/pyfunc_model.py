"""The MLflow pyfunc of an exported model, logged as *models from code*.

MLflow copies this file into the logged model and runs it at load time, so it must import
nothing from this project: it wraps the exported TF SavedModel (``artifacts["saved_model"]``)
and needs only numpy, TensorFlow and MLflow. ``mlflow models serve -m models:/NAME@champion``
serves it.

Input: a batch of 64x128 grayscale images, (N, 64, 128) or (N, 64, 128, 1), uint8 0-255 or
float 0-1 (floats whose maximum exceeds 1 are read as 0-255, as the project's loader does), as
an ndarray, nested lists (JSON ``{"inputs": ...}``) or a DataFrame of N rows x 8192 pixels.
Output: masks (N, 64, 128) uint8, labels 0-4.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

HEIGHT, WIDTH = 64, 128
BATCH = 64  # images per SavedModel call: bounds memory for large requests


def as_images(model_input: Any) -> np.ndarray:
    """Validates a request and returns it as (N, 64, 128, 1) float32 in [0, 1]."""
    if hasattr(model_input, "to_numpy"):  # a DataFrame: one row of 8192 pixels per image
        model_input = model_input.to_numpy()
    x = np.asarray(model_input)
    if x.dtype == object:
        x = np.asarray(x.tolist(), dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == HEIGHT * WIDTH:
        x = x.reshape(-1, HEIGHT, WIDTH)
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 1)) or x.shape[1:3] != (HEIGHT, WIDTH):
        raise ValueError(f"Expected images shaped (N, 64, 128) or (N, 64, 128, 1); got {x.shape}.")
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise ValueError(f"Expected uint8 or float images; got dtype {x.dtype}.")
    if x.size == 0:
        return np.zeros((0, HEIGHT, WIDTH, 1), np.float32)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError("Images hold NaN or inf values; expected finite values 0-255 or 0-1.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"Image values span [{lo:g}, {hi:g}]; expected 0-255 (uint8) or 0-1 (float).")
    out = x.reshape(-1, HEIGHT, WIDTH, 1).astype(np.float32)
    if x.dtype.kind in "ui" or hi > 1.0:
        out /= np.float32(255.0)
    return out


class MarsSegmenter(PythonModel):
    """Terrain masks from the exported SavedModel's ``serving_default`` signature."""

    def load_context(self, context: Any) -> None:
        import tensorflow as tf

        self._loaded = tf.saved_model.load(context.artifacts["saved_model"])
        self._serve = self._loaded.signatures["serving_default"]
        self._tf = tf

    # model_input is left unannotated: MLflow reads a type hint there as a schema to enforce,
    # and the explicit signature (see ablate.export.publish) already describes the input.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
        x = as_images(model_input)
        masks = np.empty(x.shape[:3], np.uint8)
        for start in range(0, len(x), BATCH):
            batch = self._tf.constant(x[start : start + BATCH])
            masks[start : start + len(batch)] = self._serve(images=batch)["masks"].numpy()
        return masks


mlflow.models.set_model(MarsSegmenter())
