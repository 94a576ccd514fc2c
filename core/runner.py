"""One tracked training run: spec -> fit -> everything recorded in MLflow.

This is what ``ablate run`` calls and what ablation and study workers call per arm/trial.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ablate import memory, tracking
from ablate.augment import Policy
from ablate.cost import flops_per_image
from ablate.scoring import (
    confusion_matrix,
    iou_from_confusion,
    iou_from_image_confusions,
    per_image_miou,
)
from ablate.spec import Spec, check_buildable, checking_task
from ablate.task import MARS, TASK_FILE, Task
from ablate.train import FitResult, Split, fit, load_data, masks_at, predict_masks, sample_index

PER_IMAGE_ARTIFACT = "per_image.parquet"  # per-image validation IoU of the restored best model


@dataclass
class RunOutcome:
    """A finished tracked run: its MLflow id and the fit result."""

    run_id: str
    result: FitResult
    summary: dict[str, float]


def mask_sample(split: Split, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed set of validation images (evenly spaced, so the same for every variant): images,
    masks and their positions in the validation set."""
    idx = sample_index(len(split.x_val), n)
    return split.x_val[idx], split.y_val[idx], idx


def per_image_frame(index: np.ndarray, ious: np.ndarray, task: Task = MARS) -> pd.DataFrame:
    """One row per image: its index in the loaded data, its mIoU and each scored class's IoU
    (columns ``iou_<class name>``).

    ``ious`` is :func:`ablate.scoring.per_image_iou` (or ``iou_from_image_confusions``) of the
    same task: nan where a class is absent from an image.

    Example:
        >>> t = np.array([[[1, 2]]], dtype=np.uint8)
        >>> from ablate.scoring import per_image_iou
        >>> per_image_frame(np.array([7]), per_image_iou(t, t))[["index", "miou", "iou_soil"]].values.tolist()
        [[7.0, 1.0, 1.0]]
    """
    frame = pd.DataFrame({"index": np.asarray(index, dtype=np.int64), "miou": per_image_miou(ious)})
    if ious.shape[1] != len(task.scored_ids):
        raise ValueError(f"per-image IoUs of {ious.shape[1]} classes for a task scoring {len(task.scored_ids)}.")
    for j, name in enumerate(task.scored_names):
        frame[f"iou_{name}"] = ious[:, j]
    return frame


def log_per_image(frame: pd.DataFrame) -> None:
    """Logs a :func:`per_image_frame` to the active run as ``per_image.parquet``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PER_IMAGE_ARTIFACT
        frame.to_parquet(path, index=False)
        tracking.log_artifact(path)


def best_pass(model: keras.Model, split: Split, result: FitResult) -> float:
    """The best epoch's validation figures: sets ``result.extras["confusion"]`` (C, C) and
    ``["per_image"]`` (see :func:`per_image_frame`); returns the seconds per image of that pass.

    They come from the best epoch's validation pass as it ran (``ablate.train.ValidationRecord``):
    no second pass over the validation set. A fit without that record (no validation epoch
    finished) falls back to one timed prediction pass.
    """
    confusions = result.extras.get("confusions")
    if confusions is None or len(confusions) != len(split.x_val):
        confusions, latency = _prediction_pass(model, split)
    else:
        latency = result.extras["val_seconds_per_image"]
    result.extras["confusion"] = confusions.sum(axis=0)
    ious = iou_from_image_confusions(confusions, split.task)
    result.extras["per_image"] = per_image_frame(split.val_index, ious, split.task)
    return latency


def summarize(model: keras.Model, split: Split, result: FitResult, flops_key: str | None = None) -> dict[str, float]:
    """Validation figures of the best epoch (:func:`best_pass`), plus cost figures.

    ``flops_key`` names the architecture, so FLOPs are counted once per architecture.
    """
    latency = best_pass(model, split, result)
    miou, per_class = iou_from_confusion(result.extras["confusion"], split.task)
    summary = {"best_val_miou": miou, "best_epoch": float(result.best_epoch + 1)}
    for k, v in per_class.items():
        summary[f"best_val_iou_{split.task.classes[k]}"] = v
    summary.update(params=float(result.params), train_time_s=result.train_seconds,
                   epochs_run=float(result.epochs_run),
                   latency_ms_per_image=1000 * latency,
                   flops_per_image=flops_per_image(model, key=flops_key))
    return summary


def _prediction_pass(model: keras.Model, split: Split) -> tuple[np.ndarray, float]:
    """Per-image confusions and seconds per image from one timed pass (after one tracing batch)."""
    predict_masks(model, split.x_val[:32], batch_size=32)
    t0 = time.perf_counter()
    pred = predict_masks(model, split.x_val, batch_size=32)
    latency = (time.perf_counter() - t0) / len(split.x_val)
    flat = len(pred), -1
    confusions = np.stack([confusion_matrix(t, p, task=split.task)
                           for t, p in zip(split.y_val.reshape(flat), pred.reshape(flat), strict=True)])
    return confusions, latency


def run_spec(
    spec: Spec,
    experiment: str = "ablate",
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    split: Split | None = None,
    run_name: str | None = None,
    verbose: int | None = None,
    on_start: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Trains ``spec`` inside an MLflow run (call ``tracking.setup`` first).

    ``on_start(run_id)`` is called once the run exists (a trial records its run id there).
    """
    task = split.task if split is not None else checking_task(spec)  # the data file's size, from its headers
    check_buildable(spec, task)  # a constructor's own checks, before any data is loaded or run started
    memory.check(spec, task)  # a model too big for this machine: one line now, not a TensorFlow crash mid-run
    split = split or load_data(spec)
    if split.task != task:  # the data's classes, where the spec leaves the task to the data
        check_buildable(spec, split.task)
        memory.check(spec, split.task)
    Policy(spec.augment, split.task)  # an augmentation the task cannot take (cutout, copy-paste's class): now
    all_tags = {**tracking.provenance_tags(spec, split.fingerprint, split.path), **(tags or {})}
    with tracking.tracked_run(spec, experiment, run_name, parent_run_id, all_tags) as run:
        if on_start is not None:
            on_start(run.info.run_id)
        tracking.log_text(split.task.file_text(), TASK_FILE)
        images, masks, positions = mask_sample(split, spec.tracking.mask_images)
        logger = tracking.MlflowLogger(images, masks, spec.tracking.mask_every, positions, split.task)
        result = fit(spec, split, [logger, *callbacks], verbose=verbose)
        with tracking.model_saved_alongside(result.model, enabled=spec.tracking.log_model):
            # The slowest figure first: it renders on the delivery thread while the rest goes on here.
            best_pass(result.model, split, result)
            confusion = result.extras["confusion"]
            tracking.log_figure(lambda: tracking.confusion_figure(confusion, split.task), "confusion_matrix.png")
            # the final grid: the best epoch's validation pass, whose weights the model was restored to
            kept = result.extras.get("kept_masks")
            final_pred = logger.log_masks(result.epochs_run, masks_at(kept, positions))
            tracking.log_sample_predictions(images, masks, final_pred)
            every = masks_at(kept, range(len(split.x_val)))
            if every is not None:  # the report's image figures read them instead of reloading the model
                tracking.log_validation_predictions(split.val_index, every)
            summary = summarize(result.model, split, result, flops_key=json.dumps(spec.model, sort_keys=True))
            tracking.log_metrics({k: v for k, v in summary.items() if np.isfinite(v)})
            log_per_image(result.extras["per_image"])
        return RunOutcome(run.info.run_id, result, summary)
