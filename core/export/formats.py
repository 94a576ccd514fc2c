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
import zipfile
import zlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ablate.data.loader import HEIGHT, WIDTH
from ablate.errors import AblateError
from ablate.metrics import NUM_CLASSES


class ExportError(AblateError):
    """An export could not be produced or failed its reload check."""


INPUT_SHAPE = (None, HEIGHT, WIDTH, 1)  # the task: 64x128 grayscale images in [0, 1]
OUTPUT_SHAPE = (None, HEIGHT, WIDTH, NUM_CLASSES)  # per-pixel class scores


def load_keras(path: str | Path) -> keras.Model:
    """Loads a ``.keras`` model of the task, uncompiled, without running code from the file.

    ``safe_mode=True``: a file that stores Python code (a ``Lambda`` layer's function) is
    refused, not run. The archive is checked before Keras opens it, so an empty, truncated or
    foreign file is reported as such (Keras says "File not found"), and the loaded model must
    map (N, 64, 128, 1) images to (N, 64, 128, 5) class scores.

    Raises:
        ExportError: the file is missing, corrupt, holds code, or is not a model of this task.
    """
    p = Path(path)
    _check_keras_archive(p)
    _register_project_classes()
    try:
        model = keras.saving.load_model(p, safe_mode=True, compile=False)
    except (ValueError, TypeError, KeyError, AttributeError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        text = str(e)
        if "safe_mode" in text or "arbitrary code" in text:
            raise ExportError(f"'{p}' stores Python code (e.g. a Lambda layer), which safe mode refuses to run; "
                              "rebuild the model from registered blocks and save it again.") from e
        raise ExportError(f"'{p}' is corrupt or not a model of this project: {_excerpt(text)}") from e
    check_task_model(model, p.name)
    return model


def check_task_model(model: keras.Model, name: str) -> None:
    """Raises ExportError unless ``model`` maps (N, 64, 128, 1) images to (N, 64, 128, 5) scores."""
    ins, outs = _shapes(model, "inputs"), _shapes(model, "outputs")
    if (len(ins), len(outs)) == (1, 1) and ins[0][1:] == INPUT_SHAPE[1:] and outs[0][1:] == OUTPUT_SHAPE[1:]:
        return
    raise ExportError(f"Model '{name}' takes inputs {_show(ins)} and gives {_show(outs)}; expected inputs "
                      f"{INPUT_SHAPE} and per-pixel scores {OUTPUT_SHAPE}: a model trained by `ablate run`.")


def _shapes(model: keras.Model, attr: str) -> list[tuple[int | None, ...]]:
    try:  # a subclassed model that was never called has no symbolic inputs or outputs
        return [tuple(t.shape) for t in getattr(model, attr) or []]
    except (AttributeError, TypeError, ValueError):
        return []


def _show(shapes: list[tuple[int | None, ...]]) -> str:
    return "an unknown shape" if not shapes else str(shapes[0]) if len(shapes) == 1 else str(shapes)[:120]


def _check_keras_archive(p: Path) -> None:
    """Refuses a missing, empty, non-zip or bomb-sized ``.keras`` before Keras reads it."""
    from ablate.data.npz import MAX_BYTES_ENV, max_array_bytes

    if not p.exists():
        raise ExportError(f"Model file '{p}' not found; expected a .keras file saved by `ablate run`.")
    if not p.is_file() or not zipfile.is_zipfile(p):
        what = "a folder" if p.is_dir() else "an empty file" if p.stat().st_size == 0 else "not a zip archive"
        raise ExportError(f"Model file '{p}' is corrupt or unreadable ({what}, e.g. truncated); expected a .keras "
                          "archive saved by Keras 3: re-export or re-download it.")
    try:
        with zipfile.ZipFile(p) as zf:
            names, unpacked = zf.namelist(), sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ExportError(f"Model file '{p}' is corrupt or unreadable ({_excerpt(str(e))}); re-export it.") from e
    if "config.json" not in names:
        raise ExportError(f"Model file '{p}' is a zip without config.json (found {sorted(names)[:5]}); expected a "
                          ".keras archive saved by Keras 3.")
    if unpacked > max_array_bytes():
        raise ExportError(f"Model file '{p}' unpacks to {unpacked / 1e9:.3g} GB, over the limit of "
                          f"{max_array_bytes() / 1e9:.3g} GB; refused unread (raise {MAX_BYTES_ENV} if genuine).")


def _register_project_classes() -> None:
    """Imports the modules whose decorators register the project's Keras classes (idempotent)."""
    import ablate.augment
    import ablate.blocks
    import ablate.losses
    import ablate.metrics
    import ablate.models
    import ablate.optim  # noqa: F401


def _excerpt(text: str) -> str:
    return (text.splitlines() or ["(no message)"])[0][:160]


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
