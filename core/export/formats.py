"""Portable formats of a trained model: ``.keras``, TF SavedModel and TFLite.

The SavedModel is what a user without this project loads (``tf.saved_model.load``): its
signatures take raw images and return masks and class probabilities, with the scaling inside
the graph. ``serving_default`` takes float images (0-1, or 0-255 when the batch's maximum
exceeds 1), ``serving_uint8`` uint8 images 0-255; both accept (N, 64, 128) or (N, 64, 128, 1).
The TFLite file is the bare network for one image at a time: float32 (1, 64, 128, 1) in
[0, 1] -> probabilities (a dynamic batch dimension breaks the TFLite runtime for some blocks,
e.g. the pyramid bottleneck and the cross-scale fusion: "BytesRequired number of elements
overflowed"; batch 1 is also what on-device use needs).

Example:
    >>> model = load_keras("exports/best/model.keras")
    >>> write_saved_model(model, "exports/best/saved_model")
    >>> write_tflite(model, "exports/best/model.tflite")
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from core.data.loader import HEIGHT, WIDTH
from core.errors import AblateError
from core.metrics import NUM_CLASSES


class ExportError(AblateError):
    """An export could not be produced or failed its reload check."""


def load_keras(path: str | Path) -> keras.Model:
    """Loads a ``.keras`` model with ``safe_mode=True`` (no arbitrary code), uncompiled."""
    import core  # noqa: F401  (registers the project's blocks so their layers deserialize)

    p = Path(path)
    if not p.is_file():
        raise ExportError(f"Model file '{p}' not found; expected a .keras file saved by `ablate run`.")
    try:
        return keras.saving.load_model(p, safe_mode=True, compile=False)
    except (ValueError, TypeError, OSError) as e:
        raise ExportError(f"'{p}' could not be loaded as a Keras model: {str(e).splitlines()[0]}") from e


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """Raw images (N, 64, 128[, 1]), uint8 or float -> (N, 64, 128, 1) float32 in [0, 1]."""
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.ones([4], tf.int32)], axis=0)  # rank 3 pads a channel of 1
    rank = tf.size(shape)
    ok = ((rank == 3) | (rank == 4)) & (padded[1] == HEIGHT) & (padded[2] == WIDTH) & (padded[3] == 1)
    tf.debugging.Assert(ok, ["expected images shaped (N, 64, 128) or (N, 64, 128, 1); got shape", shape])
    if images.dtype == tf.uint8:
        x = tf.cast(images, tf.float32) / 255.0
    else:
        x = tf.debugging.check_numerics(tf.cast(images, tf.float32), "images hold NaN or inf")
        tf.debugging.Assert(tf.reduce_min(x) >= 0.0, ["image values below 0; expected 0-1 or 0-255"])
        x = tf.cond(tf.reduce_max(x) > 1.0, lambda: x / 255.0, lambda: x)
    return tf.reshape(x, [-1, HEIGHT, WIDTH, 1])


def _serving_fn(model: keras.Model) -> Any:
    @tf.function
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = tf.cast(model(preprocess(images), training=False), tf.float32)
        return {"masks": tf.cast(tf.argmax(probs, axis=-1), tf.uint8), "probabilities": probs}

    return serve


def write_saved_model(model: keras.Model, path: str | Path) -> Path:
    """Writes a SavedModel with ``serving_default`` (float) and ``serving_uint8`` signatures."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    serve = _serving_fn(model)
    for name, dtype in (("serving_default", tf.float32), ("serving_uint8", tf.uint8)):
        # shape=None: any rank, so (N, 64, 128) and (N, 64, 128, 1) both pass; checked in-graph.
        archive.add_endpoint(name, serve, input_signature=[tf.TensorSpec(None, dtype, name="images")])
    archive.write_out(str(path), verbose=False)
    return Path(path)


def write_tflite(model: keras.Model, path: str | Path) -> Path:
    """Writes a float32 TFLite model: (1, 64, 128, 1) in [0, 1] -> probabilities (1, 64, 128, 5)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    fn = tf.function(lambda images: {"probabilities": tf.cast(model(images, training=False), tf.float32)})
    archive.add_endpoint("serving_default", fn,
                         input_signature=[tf.TensorSpec([1, HEIGHT, WIDTH, 1], tf.float32, name="images")])
    with tempfile.TemporaryDirectory() as tmp:
        # Converting from a SavedModel freezes the variables (a concrete function keeps them
        # as resources, which the TFLite runtime leaves uninitialised).
        archive.write_out(tmp, verbose=False)
        content = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    Path(path).write_bytes(content)
    return Path(path)


def tflite_predict(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of a TFLite model for float32 (N, 64, 128, 1) images in [0, 1], one at a time."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    x = images.astype(np.float32)
    return np.concatenate([np.asarray(runner(images=x[i : i + 1])["probabilities"]) for i in range(len(x))])


def keras_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Probabilities (N, 64, 128, 5) of a Keras model for (N, 64, 128, 1) float32 images."""
    out = np.asarray(model.predict_on_batch(images.astype(np.float32)), dtype=np.float32)
    if out.shape != (len(images), HEIGHT, WIDTH, NUM_CLASSES):
        raise ExportError(f"The model outputs shape {out.shape}; expected (N, 64, 128, {NUM_CLASSES}) probabilities.")
    return out
