"""Portable formats of a trained model: ``.keras``, TF SavedModel and TFLite.

Every format is for one task (:class:`ablate.task.Task`): its input size H x W and channels C,
and its classes K. The SavedModel is what a user without this project loads
(``tf.saved_model.load``): its signatures take raw images and return masks and class
probabilities, with the scaling inside the graph. ``serving_default`` takes float images (0-1,
or 0-255 when the batch's maximum exceeds 1), ``serving_uint8`` uint8 images 0-255; a grayscale
task accepts (N, H, W) or (N, H, W, 1), an RGB one (N, H, W, 3). The task travels inside the
folder as ``assets.extra/task.json`` (plain JSON; TensorFlow ignores it), so a fresh process
knows the classes without this project. The TFLite file is the bare network for one image at a
time: float32 (1, H, W, C) in [0, 1] -> probabilities (1, H, W, K) (a dynamic batch dimension
breaks the TFLite runtime for some blocks, e.g. the pyramid bottleneck and the cross-scale
fusion: "BytesRequired number of elements overflowed"; batch 1 is also what on-device use needs).

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

from ablate.errors import AblateError
from ablate.export.loading import SAVED_MODEL_TASK
from ablate.task import MARS, Task


class ExportError(AblateError):
    """An export could not be produced or failed its reload check."""




def input_shape(task: Task) -> tuple[int | None, ...]:
    """The model's input: (None, H, W, C) images in [0, 1]."""
    return (None, *task.input_shape)


def output_shape(task: Task) -> tuple[int | None, ...]:
    """The model's output: (None, H, W, K) per-pixel class scores."""
    return (None, task.height, task.width, task.num_classes)


def load_keras(path: str | Path, task: Task | None = None, source: str = "") -> keras.Model:
    """Loads a ``.keras`` segmentation model, uncompiled, without running code from the file.

    ``safe_mode=True``: a file that stores Python code (a ``Lambda`` layer's function) is
    refused, not run. The archive is checked before Keras opens it, so an empty, truncated or
    foreign file is reported as such (Keras says "File not found"), and the loaded model must
    map (N, H, W, C) images to (N, H, W, K) class scores: those of ``task`` when it is given
    (``source`` says where the task came from), else of any task.

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
    if task is None:
        model_task_shape(model, p.name)
    else:
        check_task_model(model, p.name, task, source)
    return model


def check_task_model(model: keras.Model, name: str, task: Task = MARS, source: str = "") -> None:
    """Raises ExportError unless ``model`` maps (N, H, W, C) images to (N, H, W, K) scores of ``task``."""
    ins, outs = _shapes(model, "inputs"), _shapes(model, "outputs")
    want_in, want_out = input_shape(task), output_shape(task)
    if (len(ins), len(outs)) == (1, 1) and ins[0][1:] == want_in[1:] and outs[0][1:] == want_out[1:]:
        return
    why = f" ({source})" if source else ": a model trained by `ablate run`"
    raise ExportError(f"Model '{name}' takes inputs {_show(ins)} and gives {_show(outs)}; expected inputs "
                      f"{want_in} and per-pixel scores {want_out}{why}.")


def model_task_shape(model: keras.Model, name: str = "model") -> tuple[int, int, int, int]:
    """(H, W, C, K) of a segmentation model: one (None, H, W, C) input, C 1 or 3, one (None, H, W, K) output."""
    ins, outs = _shapes(model, "inputs"), _shapes(model, "outputs")
    if (len(ins), len(outs)) == (1, 1) and len(ins[0]) == 4 and len(outs[0]) == 4 and ins[0][1:3] == outs[0][1:3] \
            and ins[0][3] in (1, 3) and isinstance(outs[0][3], int) and outs[0][3] >= 2 \
            and all(isinstance(v, int) for v in ins[0][1:]):
        h, w, c = ins[0][1:]
        return int(h), int(w), int(c), int(outs[0][3])  # type: ignore[arg-type]
    raise ExportError(f"Model '{name}' takes inputs {_show(ins)} and gives {_show(outs)}; expected inputs "
                      "(None, H, W, 1 or 3) and per-pixel scores (None, H, W, classes): a model trained by "
                      "`ablate run`.")


def task_for(model: keras.Model, task: Task | None) -> Task:
    """``task`` checked against ``model``; without one, the Mars task, which the model must fit."""
    check_task_model(model, getattr(model, "name", "model"), task or MARS,
                     "" if task is not None else "no task was given, so the Mars task's")
    return task or MARS


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


def layout(task: Task) -> str:
    """The image layouts the exported model takes, for messages and docs."""
    h, w = task.height, task.width
    if task.channels == 1:
        return f"(N, {h}, {w}) or (N, {h}, {w}, 1), grayscale"
    return f"(N, {h}, {w}, 3), RGB"


def preprocess(images: tf.Tensor, task: Task = MARS) -> tf.Tensor:
    """Raw images (N, H, W[, 1]) (grayscale) or (N, H, W, 3) (RGB), uint8 or float -> (N, H, W, C) float32 in [0, 1]."""
    h, w, c = task.input_shape
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.ones([4], tf.int32)], axis=0)  # rank 3 pads a channel of 1
    rank = tf.size(shape)
    ranks = ((rank == 3) | (rank == 4)) if c == 1 else (rank == 4)
    ok = ranks & (padded[1] == h) & (padded[2] == w) & (padded[3] == c)
    tf.debugging.Assert(ok, [f"expected images shaped {layout(task)}; got shape", shape])
    if images.dtype == tf.uint8:
        x = tf.cast(images, tf.float32) / 255.0
    else:
        x = tf.debugging.check_numerics(tf.cast(images, tf.float32), "images hold NaN or inf")
        tf.debugging.Assert(tf.reduce_min(x) >= 0.0, ["image values below 0; expected 0-1 or 0-255"])
        x = tf.cond(tf.reduce_max(x) > 1.0, lambda: x / 255.0, lambda: x)
    return tf.reshape(x, [-1, h, w, c])


def _serving_fn(model: keras.Model, task: Task) -> Any:
    @tf.function
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = tf.cast(model(preprocess(images, task), training=False), tf.float32)
        return {"masks": tf.cast(tf.argmax(probs, axis=-1), tf.uint8), "probabilities": probs}

    return serve


def write_saved_model(model: keras.Model, path: str | Path, task: Task | None = None) -> Path:
    """Writes a SavedModel with ``serving_default`` (float) and ``serving_uint8`` signatures, and the task.

    ``task`` None: the Mars task (the model must fit it).
    """
    task = task_for(model, task)
    archive = keras.export.ExportArchive()
    archive.track(model)
    serve = _serving_fn(model, task)
    for name, dtype in (("serving_default", tf.float32), ("serving_uint8", tf.uint8)):
        # shape=None: any rank, so (N, H, W) and (N, H, W, 1) both pass for grayscale; checked in-graph.
        archive.add_endpoint(name, serve, input_signature=[tf.TensorSpec(None, dtype, name="images")])
    archive.write_out(str(path), verbose=False)
    extra = Path(path) / SAVED_MODEL_TASK
    extra.parent.mkdir(exist_ok=True)
    extra.write_text(task.file_text(), encoding="utf-8")
    return Path(path)


def write_tflite(model: keras.Model, path: str | Path, task: Task | None = None) -> Path:
    """Writes a float32 TFLite model: (1, H, W, C) in [0, 1] -> probabilities (1, H, W, K)."""
    task = task_for(model, task)
    archive = keras.export.ExportArchive()
    archive.track(model)
    fn = tf.function(lambda images: {"probabilities": tf.cast(model(images, training=False), tf.float32)})
    archive.add_endpoint("serving_default", fn,
                         input_signature=[tf.TensorSpec([1, *task.input_shape], tf.float32, name="images")])
    with tempfile.TemporaryDirectory() as tmp:
        # Converting from a SavedModel freezes the variables (a concrete function keeps them
        # as resources, which the TFLite runtime leaves uninitialised).
        archive.write_out(tmp, verbose=False)
        content = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    Path(path).write_bytes(content)
    return Path(path)


def tflite_predict(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of a TFLite model for float32 (N, H, W, C) images in [0, 1], one at a time."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    x = images.astype(np.float32)
    return np.concatenate([np.asarray(runner(images=x[i : i + 1])["probabilities"]) for i in range(len(x))])


def keras_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Probabilities (N, H, W, K) of a Keras model for (N, H, W, C) float32 images."""
    out = np.asarray(model.predict_on_batch(images.astype(np.float32)), dtype=np.float32)
    h, w, _, k = model_task_shape(model, getattr(model, "name", "model"))
    if out.shape != (len(images), h, w, k):
        raise ExportError(f"The model outputs shape {out.shape}; expected (N, {h}, {w}, {k}) probabilities.")
    return out
