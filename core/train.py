"""Training: spec -> data -> model -> Keras ``fit``. No tracking here (see ablate.tracking).

Example:
    >>> from ablate.spec import load_spec
    >>> result = fit(load_spec("ablations/presets/unet-baseline.yaml", ["train.epochs=1"]))
    >>> result.best["val_miou"]
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ablate.augment import Policy
from ablate.data.default import default_data_path
from ablate.data.loader import SegData, cached_fingerprint, load_npz, split_indices
from ablate.errors import SpecError
from ablate.metrics import segmentation_metrics
from ablate.models import build_model
from ablate.pipeline import eval_dataset, train_dataset
from ablate.registry import LOSSES, OPTIMIZERS, SCHEDULES
from ablate.signals import deliver_pending, held
from ablate.spec import Spec
from ablate.task import MARS, Task


@dataclass
class Split:
    """Train/validation arrays of one run (fixed by the spec's seed).

    ``val_index[i]`` is the index of validation image ``i`` in the loaded data set (after
    ``data.limit``, before cleaning), so one image can be matched across seeds and arms. A split
    built from arrays of one's own without it gets positions ``0..len(x_val)-1``. ``task`` is the
    data's task (the model's input shape and classes, the metric's and losses' ignore label).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    fingerprint: str
    path: str
    val_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # empty: not given
    task: Task = MARS

    def __post_init__(self) -> None:
        self.val_index = np.asarray(self.val_index, dtype=np.int64)
        if self.val_index.size == 0:
            self.val_index = np.arange(len(self.x_val), dtype=np.int64)
        if self.val_index.shape != (len(self.x_val),):
            raise ValueError(f"Split.val_index must hold one index per validation image ({len(self.x_val)}); "
                             f"got shape {self.val_index.shape}.")


@dataclass
class FitResult:
    """What a finished ``fit`` returns: the model restored to its best epoch and its figures."""

    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    best: dict[str, float]
    params: int
    train_seconds: float
    epochs_run: int
    extras: dict[str, Any] = field(default_factory=dict)


def load_data(spec: Spec, data: SegData | None = None) -> Split:
    """Loads the spec's data (or the synthetic default) and splits it by the spec's seed.

    The data is checked against the spec's task (``spec.given_task()``), or its task is inferred
    from the file; the split carries it.
    """
    if data is None:
        path = spec.data.path or str(default_data_path())
        data = shared_data(path, spec.data.limit, spec.given_task())
    task = data.task
    if spec.task is not None and task != spec.task:
        raise SpecError(f"The data's task ({task.describe()}) is not the spec's task ({spec.task.describe()}).")
    images, masks, groups = data.images, data.masks, data.groups
    keep = np.arange(len(masks), dtype=np.int64)  # index in the loaded data of each kept pair
    if spec.data.clean:
        from ablate.data.clean import find_outliers

        removed = np.asarray(find_outliers(masks, ignore_label=task.ignore_label, images=images).removed, dtype=int)
        keep = np.setdiff1d(keep, removed)
        images, masks = images[keep], masks[keep]
        groups = groups[keep] if groups is not None else None
    tr, va = split_indices(len(images), spec.data.val_fraction, spec.seed, groups=groups)
    return Split(images[tr], masks[tr], images[va], masks[va], data.fingerprint, data.path, keep[va], task)


_DATA: dict[tuple[str, str, int | None], SegData] = {}  # the data set this process's runs share


def shared_data(path: str, limit: int | None, task: Task | None = None) -> SegData:
    """The loaded data, kept for the next run of this process (a worker's trials, an ablation's
    arms): reading and checking the file costs about a second a run. Keyed by the file's content
    fingerprint, so a rewritten file is read again; reused when ``task`` is None (inferred) or is
    the task the data was read with, else read again and checked against ``task``. One entry, so
    memory holds one data set. The arrays are read-only: splits take copies, and nothing may
    change what later runs read."""
    key = (str(Path(path).resolve()), cached_fingerprint(path), limit)
    cached = _DATA.get(key)
    if cached is not None and (task is None or cached.task == task):
        return cached
    data = load_npz(path, limit=limit, task=task)
    if task is None and data.task != MARS:  # once per file and process: the user never named these classes
        print(f"task inferred from '{Path(path).name}': {data.task.describe()} "
              f"(name the classes in the spec's task: section)", flush=True)
    for array in (data.images, data.masks, data.groups):
        if array is not None:
            array.flags.writeable = False
    _DATA.clear()
    _DATA[key] = data
    return data


KEEP_MASKS_BYTES = 64 * 2**20  # a fit keeps every validation mask of its passes up to this size (int32)


def sample_index(n_val: int, n: int) -> np.ndarray:
    """Positions of a run's fixed sample of validation images (the mask grids): ``n`` evenly
    spaced ones, so every variant and seed of one split shows the same images."""
    return np.linspace(0, n_val - 1, num=min(n, n_val)).astype(int) if n_val else np.empty(0, int)


def set_seed(seed: int) -> None:
    """Seeds Python, numpy and TensorFlow (weights init, dropout) at once."""
    keras.utils.set_random_seed(seed)


def compile_model(spec: Spec, split: Split, steps_per_epoch: int,
                  record: bool = True) -> tuple[keras.Model, list[keras.callbacks.Callback]]:
    """Builds and compiles the spec's model; returns it with the schedule's callbacks.

    With ``record``, the mIoU metric keeps each validation image's confusion counts per pass
    and predicted masks: of every image while they fit in ``KEEP_MASKS_BYTES``, else of the
    sample images (``sample_index``, the spec's ``tracking.mask_images``); see
    ``ValidationRecord``. Benchmarks compile without it for a bare Keras baseline.
    """
    if spec.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    task = split.task
    model = build_model(spec.model, task)
    loss = LOSSES.build(spec.loss)
    if hasattr(loss, "set_task"):
        loss.set_task(task)  # the ignore label and the scored classes
    if hasattr(loss, "prepare"):
        loss.prepare(split.y_train)  # e.g. class weights from the training masks
    schedule = SCHEDULES.build(spec.schedule)
    opt_name, opt_kwargs = OPTIMIZERS.split(spec.optimizer)
    default_lr = OPTIMIZERS.schema(opt_name).defaults["learning_rate"]
    base_lr = float(opt_kwargs.pop("learning_rate", default_lr))  # each optimizer's own default
    lr = schedule.learning_rate(base_lr, spec.train.epochs, steps_per_epoch)
    optimizer = OPTIMIZERS.get(opt_name)(learning_rate=lr, **opt_kwargs)
    n_val, (height, width) = len(split.x_val), split.x_val.shape[1:3]
    if not record:
        sample: tuple[int, ...] = ()
    elif 4 * (n_val + 1) * height * width <= KEEP_MASKS_BYTES:
        sample = tuple(range(n_val))
    else:
        sample = tuple(int(i) for i in sample_index(n_val, spec.tracking.mask_images))
    metrics = segmentation_metrics(record_images=n_val if record else 0, sample_positions=sample,
                                   sample_shape=(height, width), task=task)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=spec.train.jit_compile)
    return model, schedule.callbacks(spec.train.epochs, steps_per_epoch)


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best val mIoU epoch and restores them when training ends.

    The weights are copied at a new best epoch only if more epochs may follow; when the best
    epoch is the last one run, the model already holds its weights and nothing is copied back
    (a one-epoch trial pays neither copy).
    """

    def __init__(self) -> None:
        super().__init__()
        self.best = -math.inf
        self.best_epoch = -1
        self.last_epoch = -1
        self.weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.last_epoch = epoch
        value = (logs or {}).get("val_miou", -math.inf)
        if value is not None and value > self.best:
            self.best, self.best_epoch = float(value), epoch
            final = epoch + 1 >= int(self.params.get("epochs") or 0)  # the planned last epoch
            self.weights = None if final else self.model.get_weights()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.weights is not None and self.best_epoch != self.last_epoch:
            self.model.set_weights(self.weights)


class ValidationRecord(keras.callbacks.Callback):
    """The best epoch's validation pass, kept as it ran: no second pass after training.

    After each epoch the mIoU metric holds the validation pass's per-image confusion counts
    (``MeanIoU(record_images=N)``, reset before every pass, images in file order). At the best
    epoch (``BestWeights``, which runs first) they are copied, with the pass's wall time per
    image: the run's confusion matrix, per-image IoUs and latency come from the very pass whose
    val mIoU chose the weights that ``BestWeights`` restores. The pass's kept predicted masks
    (``recorded_masks``) are copied at the best epoch only (``best_kept``: the run's final grid and
    logged predictions, the restored model's); the mask grid of each epoch reads its own.

    Args:
        best: the ``BestWeights`` callback of the same fit.
    """

    def __init__(self, best: BestWeights) -> None:
        super().__init__()
        self.best = best
        self.metric: Any = None  # the compiled recording MeanIoU, found after the first epoch
        self.confusions: np.ndarray | None = None  # (N, C, C) int64 counts of the best epoch's pass
        self.seconds_per_image = math.nan  # the best epoch's validation pass, batched, metrics included
        self.best_kept: Kept | None = None  # the best epoch's pass: kept positions and their predicted masks
        self._t0 = self._seconds = 0.0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._record(True)
        self._t0 = time.perf_counter()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._seconds = time.perf_counter() - self._t0
        self._record(False)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._record(True)  # the metric's default again, for a later evaluate

    def _record(self, on: bool) -> None:
        """Switches the recording mIoU metric's record: on for validation passes, off for training
        passes once the first validation pass has run (Keras builds the compiled metrics when the
        first training step is traced, so the first epoch's training pass still records)."""
        self._recording_metric().recording.assign(1 if on else 0)

    def _recording_metric(self) -> Any:
        self.metric = self.metric or _miou_metric(self.model)  # Keras builds its metric container lazily
        return self.metric

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.best.best_epoch != epoch:
            return
        metric = self._recording_metric()
        self.best_kept = recorded_masks(self.model, logs)  # read at the best epoch only: a copy of the pass's masks
        seen = min(int(metric.seen.numpy()), metric.record_images)
        self.confusions = np.rint(metric.images.numpy()[:seen]).astype(np.int64)
        self.seconds_per_image = self._seconds / max(seen, 1)


class SafeStops(keras.callbacks.Callback):
    """Delivers a stop signal held during ``fit`` before the next batch (``ablate.signals.held``).

    Raised at once, a SIGTERM would mostly land inside TensorFlow's C code, which can turn it into
    another error. The ``*_batch_begin`` hooks keep Keras's asynchronous batch-end dispatch.
    """

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        deliver_pending()

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        deliver_pending()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        deliver_pending()


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_time`` (seconds) to each epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:  # Keras adds learning_rate itself
            logs["epoch_time"] = time.perf_counter() - self._t0


def fit(
    spec: Spec,
    split: Split | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | None = None,
) -> FitResult:
    """Trains the spec's model; returns it restored to its best validation epoch."""
    split = split or load_data(spec)
    if len(split.x_train) == 0 or len(split.x_val) == 0:
        raise SpecError("The data split left an empty training or validation set; "
                        "use more data or change data.val_fraction.")
    set_seed(spec.seed)
    bs = spec.train.batch_size
    steps = max(1, math.ceil(len(split.x_train) / bs))
    model, schedule_cbs = compile_model(spec, split, steps)
    policy = Policy(spec.augment, split.task)
    train_ds = train_dataset(split.x_train, split.y_train, bs, spec.seed, policy, spec.train.shuffle_buffer)
    val_ds = eval_dataset(split.x_val, split.y_val, bs)
    best = BestWeights()
    record = ValidationRecord(best)
    cbs: list[keras.callbacks.Callback] = [SafeStops(), EpochTimer(), best, record, *schedule_cbs]
    if spec.train.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_miou", mode="max", patience=spec.train.early_stopping))
    cbs.extend(callbacks)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t0 = time.perf_counter()
    with held():  # a stop signal waits for the next batch (SafeStops), out of TensorFlow's C code
        hist = model.fit(train_ds, validation_data=val_ds, epochs=spec.train.epochs, callbacks=cbs,
                         verbose=verbose, shuffle=False)  # the dataset is already shuffled with the run's seed
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epoch = max(best.best_epoch, 0)
    best_values = {k: v[epoch] for k, v in history.items() if k.startswith("val_") and len(v) > epoch}
    extras = {"confusions": record.confusions, "val_seconds_per_image": record.seconds_per_image,
              "kept_masks": record.best_kept}
    return FitResult(model, history, epoch, best_values, model.count_params(), seconds, len(history.get("loss", [])),
                     extras)


def _miou_metric(model: keras.Model) -> Any:
    """The compiled ``MeanIoU`` that records images (Keras nests compiled metrics in a container)."""
    from ablate.metrics import MeanIoU

    stack = list(model.metrics)
    while stack:
        metric = stack.pop()
        if isinstance(metric, MeanIoU) and metric.record_images:
            return metric
        stack.extend(getattr(metric, "metrics", []))
    raise RuntimeError("the compiled model has no recording MeanIoU metric (see compile_model)")


Kept = tuple[np.ndarray, np.ndarray]  # (positions in the validation pass, their masks (k, H, W) uint8)


def recorded_masks(model: keras.Model, logs: dict[str, Any] | None) -> Kept | None:
    """The predicted masks kept from this epoch's validation pass (``compile_model(record=True)``),
    or None: no validation pass this epoch, or no record."""
    if "val_loss" not in (logs or {}):
        return None
    try:
        metric = _miou_metric(model)
    except RuntimeError:
        return None
    return metric.kept_masks() if metric.sample_positions else None


def masks_at(kept: Kept | None, positions: Sequence[int]) -> np.ndarray | None:
    """The kept masks of ``positions`` (in that order), or None if any of them was not kept."""
    if kept is None:
        return None
    row = {int(p): i for i, p in enumerate(kept[0])}
    if any(int(p) not in row for p in positions):
        return None
    return kept[1][[row[int(p)] for p in positions]]


def predict_masks(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Argmax masks (N, H, W) uint8 for images (N, H, W, C)."""
    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return np.argmax(probs, axis=-1).astype(np.uint8)


