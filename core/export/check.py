"""The reload check: every exported format must predict what the trained model predicts.

On a fixed batch of images each format is reloaded from disk and compared with the trained
model in memory: probabilities within ``PROB_ATOL`` (TFLite: ``TFLITE_ATOL``) and identical
masks. Float arithmetic differs in the last bits between runtimes, so a pixel whose two best
classes are tied within twice the tolerance may flip; such pixels are counted and reported,
every other mask difference fails the export.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ablate.export.formats import ExportError, keras_probabilities, load_keras, tflite_predict
from ablate.task import MARS, Task

PROB_ATOL = 1e-4  # .keras, SavedModel, pyfunc: the same TF kernels, so float32 rounding only
# TFLite fuses and reorders ops (its own conv kernels, XNNPACK); 1e-3 leaves room for that
# while still catching a wrong scaling or a missing layer (which shift probabilities by >1e-2).
TFLITE_ATOL = 1e-3
CHECK_IMAGES = 16  # the fixed batch: 14 synthetic images (Mars: terrain), one black, one white
CHECK_SEED = 20240611


@dataclass(frozen=True)
class FormatCheck:
    """One format's agreement with the trained model on the fixed batch."""

    name: str
    max_prob_diff: float | None  # None: the format returns masks only (pyfunc)
    tolerance: float
    mask_diffs: int  # pixels whose label differs from the trained model's
    tied_pixels: int  # of those, pixels whose two best classes are tied within 2 x tolerance

    @property
    def ok(self) -> bool:
        close = self.max_prob_diff is None or self.max_prob_diff <= self.tolerance
        return close and self.mask_diffs == self.tied_pixels

    def line(self) -> str:
        diff = "masks only" if self.max_prob_diff is None else f"max |dp| {self.max_prob_diff:.2e}"
        return (f"{self.name}: {diff} (tolerance {self.tolerance:g}), {self.mask_diffs} differing mask pixels "
                f"({self.tied_pixels} at numerical ties) -> {'ok' if self.ok else 'FAILED'}")


def check_images(task: Task = MARS) -> np.ndarray:
    """The fixed uint8 batch every format is checked on, in the task's canonical layout.

    Grayscale: (16, H, W); RGB: (16, H, W, 3). The Mars task's are synthetic terrain; any other
    task's are smooth seeded noise (blocks of 4x4 pixels with a fine grain on top), which spreads
    the predictions over several classes even for an untrained model.
    """
    h, w, c = task.input_shape
    n = CHECK_IMAGES - 2
    if task.is_mars:
        from ablate.data.synth import generate

        images = generate(n, seed=CHECK_SEED)["training_set"][:, 0]
    else:
        rng = np.random.default_rng(CHECK_SEED)
        coarse = rng.integers(0, 256, (n, -(-h // 4), -(-w // 4), c)).repeat(4, axis=1).repeat(4, axis=2)
        grain = rng.integers(-24, 25, (n, h, w, c))
        images = np.clip(coarse[:, :h, :w] + grain, 0, 255).astype(np.uint8)
        images = images[..., 0] if c == 1 else images
    edges = np.stack([np.zeros(images.shape[1:], np.uint8), np.full(images.shape[1:], 255, np.uint8)])
    return np.concatenate([images, edges])


def as_model_input(raw: np.ndarray) -> np.ndarray:
    """Canonical uint8 images -> the network's float32 (N, H, W, C) in [0, 1]."""
    x = raw.astype(np.float32) / np.float32(255.0)
    return x[..., None] if x.ndim == 3 else x


def compare(name: str, ref: np.ndarray, masks: np.ndarray, probs: np.ndarray | None, tol: float) -> FormatCheck:
    """Compares one format's masks (and probabilities) with the reference probabilities."""
    ref_masks = ref.argmax(axis=-1)
    if masks.shape != ref_masks.shape:
        raise ExportError(f"{name} returned masks of shape {masks.shape}; expected {ref_masks.shape}.")
    top2 = np.sort(ref, axis=-1)[..., -2:]
    tied = (top2[..., 1] - top2[..., 0]) <= 2 * tol
    differ = masks != ref_masks
    diff = None if probs is None else float(np.abs(probs - ref).max())
    return FormatCheck(name, diff, tol, int(differ.sum()), int((differ & tied).sum()))


def _savedmodel_checks(path: Path, raw: np.ndarray, ref: np.ndarray) -> list[FormatCheck]:
    """Floats in the canonical layout (grayscale without a channel axis), uint8 with one."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    out = []
    with_channel = raw[..., None] if raw.ndim == 3 else raw
    for sig, batch in (("serving_default", raw.astype(np.float32) / 255.0), ("serving_uint8", with_channel)):
        res = loaded.signatures[sig](images=tf.constant(batch))
        out.append(compare(f"saved_model[{sig}]", ref, res["masks"].numpy(), res["probabilities"].numpy(),
                           PROB_ATOL))
    return out


def check_bundle(model: keras.Model, bundle: Path, task: Task = MARS) -> list[FormatCheck]:
    """Reloads every format in ``bundle`` and compares it with ``model``; raises if one disagrees.

    Args:
        model: the trained model, in memory.
        bundle: the export folder (model.keras, saved_model/, model.tflite).
        task: the model's task (the check batch's size and channels).
    """
    raw = check_images(task)
    x = as_model_input(raw)
    ref = keras_probabilities(model, x)
    reloaded = keras_probabilities(load_keras(bundle / "model.keras", task), x)
    checks = [compare("model.keras", ref, reloaded.argmax(-1), reloaded, PROB_ATOL)]
    checks += _savedmodel_checks(bundle / "saved_model", raw, ref)
    lite = tflite_predict(bundle / "model.tflite", x)
    checks.append(compare("model.tflite", ref, lite.argmax(-1), lite, TFLITE_ATOL))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ExportError("Reload check failed; the exported model does not reproduce the trained one: "
                          + "; ".join(c.line() for c in failed))
    return checks


def check_pyfunc(model: keras.Model, pyfunc: Callable[[np.ndarray], np.ndarray], task: Task = MARS) -> FormatCheck:
    """Compares a logged pyfunc (``uint8 images -> masks``) with ``model``; raises if it disagrees."""
    raw = check_images(task)
    ref = keras_probabilities(model, as_model_input(raw))
    result = compare("mlflow pyfunc", ref, np.asarray(pyfunc(raw)), None, PROB_ATOL)
    if not result.ok:
        raise ExportError(f"Reload check failed for the logged MLflow model: {result.line()}")
    return result
