"""The MLflow pyfunc of an exported model, logged as *models from code*.

MLflow copies this file into the logged model and runs it at load time, so it must import
nothing from this project: it wraps the exported TF SavedModel (``artifacts["saved_model"]``)
and needs only numpy, TensorFlow and MLflow. The model's task (input size, channels, classes)
is read from the logged ``task.json`` (``artifacts["task"]``, else the SavedModel's
``assets.extra/task.json``; a model logged before tasks existed is the Mars course's 64x128
grayscale). ``mlflow models serve -m models:/NAME@champion`` serves it.

Input: a batch of H x W images of the task, grayscale (N, H, W) or (N, H, W, 1), or RGB
(N, H, W, 3); uint8 0-255 or float 0-1 (floats whose maximum exceeds 1 are read as 0-255, as
the project's loader does), as an ndarray, nested lists (JSON ``{"inputs": ...}``) or a
DataFrame of N rows x H*W*C pixels.
Output: masks (N, H, W) uint8, labels 0 to K-1 (the task's classes).
"""

from __future__ import annotations

import json
import os
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

DEFAULT_SHAPE = (64, 128, 1)  # a model logged before tasks existed: the Mars course's images
BATCH = 64  # images per SavedModel call: bounds memory for large requests


def layout(shape: tuple[int, int, int]) -> str:
    h, w, c = shape
    return f"(N, {h}, {w}) or (N, {h}, {w}, 1)" if c == 1 else f"(N, {h}, {w}, 3) (RGB)"


def as_images(model_input: Any, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> np.ndarray:
    """Validates a request and returns it as (N, H, W, C) float32 in [0, 1] for ``shape`` (H, W, C)."""
    h, w, c = shape
    if hasattr(model_input, "to_numpy"):  # a DataFrame: one row of H*W*C pixels per image
        model_input = model_input.to_numpy()
    x = np.asarray(model_input)
    if x.dtype == object:
        x = np.asarray(x.tolist(), dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == h * w * c:
        x = x.reshape(-1, h, w) if c == 1 else x.reshape(-1, h, w, c)
    ranks = (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 1)) if c == 1 else (x.ndim == 4 and x.shape[3] == c)
    if not ranks or x.shape[1:3] != (h, w):
        raise ValueError(f"Expected images shaped {layout(shape)}; got {x.shape}.")
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise ValueError(f"Expected uint8 or float images; got dtype {x.dtype}.")
    if x.size == 0:
        return np.zeros((0, h, w, c), np.float32)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError("Images hold NaN or inf values; expected finite values 0-255 or 0-1.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"Image values span [{lo:g}, {hi:g}]; expected 0-255 (uint8) or 0-1 (float).")
    out = x.reshape(-1, h, w, c).astype(np.float32)
    if x.dtype.kind in "ui" or hi > 1.0:
        out /= np.float32(255.0)
    return out


def read_task(artifacts: dict[str, str]) -> dict[str, Any]:
    """The logged task as a plain dict (``height``, ``width``, ``channels``, ``classes``, ...)."""
    candidates = [artifacts.get("task"), os.path.join(artifacts["saved_model"], "assets.extra", "task.json")]
    for path in candidates:
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    h, w, c = DEFAULT_SHAPE
    return {"height": h, "width": w, "channels": c,
            "classes": ["background", "soil", "bedrock", "sand", "big_rock"], "ignore_label": 0}


class Segmenter(PythonModel):
    """Masks from the exported SavedModel's ``serving_default`` signature, for the logged task."""

    def load_context(self, context: Any) -> None:
        import tensorflow as tf

        self.task = read_task(context.artifacts)
        self._shape = (int(self.task["height"]), int(self.task["width"]), int(self.task["channels"]))
        self._loaded = tf.saved_model.load(context.artifacts["saved_model"])
        self._serve = self._loaded.signatures["serving_default"]
        self._tf = tf

    # model_input is left unannotated: MLflow reads a type hint there as a schema to enforce,
    # and the explicit signature (see ablate.export.publish) already describes the input.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
        x = as_images(model_input, self._shape)
        masks = np.empty(x.shape[:3], np.uint8)
        for start in range(0, len(x), BATCH):
            batch = self._tf.constant(x[start : start + BATCH])
            masks[start : start + len(batch)] = self._serve(images=batch)["masks"].numpy()
        return masks


mlflow.models.set_model(Segmenter())
