"""MLflow tracking: where runs go, what each run records, and how it always ends.

Every run records the flattened spec as params, ``spec.json``, provenance tags, per-epoch
metrics, a grid of predicted masks over time, a confusion matrix, cost figures and the
trained model. A run that raises ends FAILED (Ctrl-C: KILLED), never RUNNING.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from ablate import resilience
from ablate.errors import AblateError
from ablate.signals import describe, stop_in
from ablate.spec import Spec
from ablate.task import MARS, Task

LOCAL_STORE = Path("mlruns")


def default_tracking_uri() -> str:
    """SQLite in ``mlruns/mlflow.db`` under the current folder (the project root)."""
    LOCAL_STORE.mkdir(exist_ok=True)
    return f"sqlite:///{(LOCAL_STORE / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` (a CLI flag) > ``$MLFLOW_TRACKING_URI`` > the local SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def ui_base(uri: str) -> str:
    """The web address where a user sees runs of ``uri`` (the `ablate ui` default for local stores)."""
    return resilience.redact_text(uri.rstrip("/")) if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def run_link(uri: str, run_id: str) -> str:
    """A link that opens a run in the MLflow UI (start it with `ablate ui` for local stores)."""
    run = MlflowClient().get_run(run_id)
    return f"{ui_base(uri)}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def experiment_link(uri: str, experiment_id: str) -> str:
    """A link to the runs table (the 'Model training' view) of an experiment."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raises a clear error if an HTTP tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):  # a server with authentication is up
            return
    except (urllib.error.URLError, OSError):
        pass
    raise AblateError(
        f"MLflow tracking server {resilience.redact_text(uri)} is not reachable; start it "
        f"(e.g. `ablate ui` or docker compose up mlflow) "
        f"or pass --offline-ok to log to the local store."
    )


def setup(uri: str | None = None, offline_ok: bool = False) -> str:
    """Points MLflow at the resolved tracking URI and returns it.

    An unreachable server is an error before any training, or with ``offline_ok`` a switch
    to the local store (said on stderr).
    """
    uri = resolve_tracking_uri(uri)
    try:
        check_reachable(uri)
    except AblateError:
        if not offline_ok:
            raise
        local = default_tracking_uri()
        print(f"ablate: tracking server {resilience.redact_text(uri)} is not reachable; logging to the local "
              f"store {local} instead (--offline-ok); see the runs with `ablate ui`.", file=sys.stderr, flush=True)
        uri = local
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created if needed (a SQLite store keeps artifacts beside its file)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):  # artifacts next to the database, as mlruns/mlflow.db + mlruns/artifacts
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        exp = client.get_experiment_by_name(name)  # another worker created it meanwhile
        if exp is None:
            raise
        return exp.experiment_id


def git_info() -> dict[str, str]:
    """Commit and dirty flag of the working folder, or 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU x{len(gpus)}" if gpus else f"CPU ({platform.processor() or platform.machine()})"


def _keras_version() -> str:
    import keras

    return str(keras.__version__)


def provenance_tags(spec: Spec, fingerprint: str, data_path: str) -> dict[str, str]:
    import tensorflow as tf

    return {
        "spec_hash": spec.spec_hash,
        "seed": str(spec.seed),
        "data_fingerprint": fingerprint,
        "data_path": data_path,
        "tf_version": tf.__version__,
        "keras_version": _keras_version(),
        "device": device_name(),
        "python": platform.python_version(),
        **git_info(),
    }


@contextlib.contextmanager
def tracked_run(
    spec: Spec,
    experiment: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Starts a run, logs the spec, and always ends it: FINISHED, FAILED or KILLED.

    What is logged inside goes through the run's background delivery queue
    (``ablate.resilience.Delivery``): if the tracking server goes away, training goes on and the
    queue delivers everything in order once it is back. The run ends only after that.
    """
    owner = {"ablate.host": platform.node(), "ablate.pid": str(os.getpid())}  # lets `ablate doctor` spot a dead owner
    run = resilience.retry(lambda: _start_run(experiment, run_name or spec.name, parent_run_id,
                                              {**(tags or {}), **owner}), "start the MLflow run")
    delivery = resilience.Delivery(run.info.run_id)
    with resilience.delivering(delivery):
        try:
            delivery.log_params(spec.flat())
            delivery.log_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True), "spec.json")
            yield run
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGHUP under ablate.signals
            _end(run, delivery, "KILLED", describe(e))
            raise
        except BaseException as e:
            if (stop := stop_in(e)) is not None:  # a stop that TensorFlow's C code wrapped in another error
                _end(run, delivery, "KILLED", describe(stop))
                raise stop from None  # a stop again for the callers: a worker fails its trial for retry
            _end(run, delivery, "FAILED", f"{type(e).__name__}: {e}", traceback.format_exc())
            raise
        else:
            _end(run, delivery, "FINISHED")


def _start_run(experiment: str, run_name: str, parent_run_id: str | None, tags: dict[str, str]) -> mlflow.ActiveRun:
    exp_id = ensure_experiment(experiment)
    return mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent_run_id,
                            nested=parent_run_id is not None, tags=tags)


def _end(run: mlflow.ActiveRun, delivery: resilience.Delivery, status: str, message: str = "",
         tb: str | None = None) -> None:
    """Delivers the backlog, then sets the final status (a second Ctrl-C skips the wait)."""
    run_id, interrupted = run.info.run_id, False
    if message:
        delivery.set_tags({"error": resilience.redact_text(message)[:500]})
    if tb:
        delivery.log_text(resilience.redact_text(tb), "error.txt")
    try:
        delivery.close(resilience.DELIVERY_TIMEOUT_S if status == "FINISHED" else resilience.INTERRUPT_FLUSH_S)
    except resilience.DeliveryError:
        with contextlib.suppress(Exception):
            mlflow.end_run(status)  # off the active-run stack; the server is still away
        if status == "FINISHED":
            raise
        print(f"ablate: {delivery.pending} item(s) of run {run_id} were not delivered", file=sys.stderr)
        return
    except KeyboardInterrupt:
        status, interrupted = "KILLED", True
    try:
        mlflow.end_run(status)  # takes the run off the active-run stack first, then sets the status
    except Exception:  # noqa: BLE001 - the server went away again: keep trying to set the status
        with contextlib.suppress(Exception):
            resilience.retry(lambda: MlflowClient().set_terminated(run_id, status), "end the MLflow run",
                             resilience.RECONNECT_S if status == "FINISHED" else resilience.INTERRUPT_FLUSH_S)
    if interrupted:
        raise KeyboardInterrupt


# --- figures ---------------------------------------------------------------------------

IGNORE_COLOUR = (160, 160, 160)  # pixels of an ignore label outside the classes (255): light grey


def palette(task: Task = MARS) -> np.ndarray:
    """(256, 3) uint8: the task's colour of each label; any other value (an ignore label such as 255) grey."""
    table = np.tile(np.array(IGNORE_COLOUR, np.uint8), (256, 1))
    table[: task.num_classes] = np.array(task.palette, np.uint8)
    return table


def colourize(mask: np.ndarray, task: Task = MARS) -> np.ndarray:
    """(..., 3) uint8 RGB of a label mask in the task's colours."""
    return palette(task)[np.clip(mask, 0, 255).astype(np.intp)]


def legend_entries(task: Task = MARS) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of each class in figures' legends, then the ignore label when it is not a class."""
    entries = [(name, tuple(colour)) for name, colour in zip(task.classes, task.palette, strict=True)]
    if task.ignore_label is not None and not task.ignore_is_class:
        entries.append((f"{task.ignore_label} (not scored)", IGNORE_COLOUR))
    return entries  # type: ignore[return-value]


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of an (H, W, C) image in [0, 1]: grey repeated, or RGB as it is."""
    img = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    return img if img.shape[-1] == 3 else np.repeat(img[..., :1], 3, axis=-1)


def mask_grid(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str = "",
              task: Task = MARS) -> np.ndarray:
    """One row per image: image | ground truth | prediction, with a colour legend below (wrapped to the width)."""
    from PIL import Image, ImageDraw

    rows = []
    gap = np.full((images.shape[1], 4, 3), 255, np.uint8)
    for img, t, p in zip(images, truth, pred, strict=True):
        rows.append(np.concatenate([display_rgb(img), gap, colourize(t, task), gap, colourize(p, task)], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows, axis=0)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    places, x, line = [], 4, 0
    for name, colour in legend_entries(task):
        step = 14 + int(measure.textlength(name)) + 10
        if x > 4 and x + step > grid.shape[1]:
            x, line = 4, line + 1
        places.append((x, 16 * line, name, colour))
        x += step
    top = 16 * (line + 1) + 4
    legend = Image.new("RGB", (grid.shape[1], top + 16 if title else top), "white")
    draw = ImageDraw.Draw(legend)
    for x, y, name, colour in places:
        draw.rectangle([x, y + 5, x + 10, y + 15], fill=colour, outline="black")
        draw.text((x + 13, y + 4), name, fill="black")
    if title:
        draw.text((4, top + 2), title, fill="black")
    header = Image.new("RGB", (grid.shape[1], 14), "white")
    hdraw = ImageDraw.Draw(header)
    for i, label in enumerate(("image", "truth", "prediction")):
        hdraw.text((4 + i * (images.shape[2] + 4), 1), label, fill="black")
    return np.concatenate([np.asarray(header), grid, np.asarray(legend)], axis=0)


def confusion_figure(cm: np.ndarray, task: Task = MARS) -> Any:
    """A row-normalised confusion matrix: truth rows of the scored classes (Mars 1-4), all predicted columns.

    Built on ``matplotlib.figure.Figure``, not pyplot: no global state, so it can be rendered on
    the delivery thread while training goes on.
    """
    from matplotlib.figure import Figure

    rows = np.asarray(cm)[list(task.scored_ids)].astype(float)
    norm = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    c = task.num_classes
    fig = Figure(figsize=(max(5.5, 0.8 * c + 1.5), max(4.0, 0.6 * len(task.scored_ids) + 1.5)))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(c), task.classes, rotation=30)
    ax.set_yticks(range(len(task.scored_ids)), task.scored_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth (labelled pixels)")
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Logs metrics to the active run through its delivery queue (directly outside a tracked run)."""
    delivery = resilience.current()
    if delivery is not None:
        delivery.log_metrics(metrics, step=step)
    else:
        mlflow.log_metrics(metrics, step=step)


def log_text(text: str, artifact_file: str) -> None:
    """Logs a text file (``task.json``) to the active run through its delivery queue."""
    delivery = resilience.current()
    if delivery is not None:
        delivery.log_text(text, artifact_file)
    else:
        mlflow.log_text(text, artifact_file)


def log_artifact(local_path: str | Path, artifact_path: str | None = None) -> None:
    """Logs a file to the active run through its delivery queue (the file may be deleted after)."""
    delivery = resilience.current()
    if delivery is not None:
        delivery.log_artifact(local_path, artifact_path)
    else:
        mlflow.log_artifact(str(local_path), artifact_path)


SAMPLE_ARTIFACT = "predictions/sample.npz"


def log_sample_predictions(images: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> None:
    """The fixed validation images, their truth and the final prediction, for cross-run views.

    Images are stored as uint8: (k, H, W) grey, or (k, H, W, 3) RGB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(SAMPLE_ARTIFACT).name
        img = (np.clip(images if images.shape[-1] == 3 else images[..., 0], 0, 1) * 255).round().astype(np.uint8)
        np.savez_compressed(path, images=img, truth=truth.astype(np.uint8), pred=pred.astype(np.uint8))
        log_artifact(path, str(Path(SAMPLE_ARTIFACT).parent))


VALIDATION_ARTIFACT = "predictions/val.npz"


def log_validation_predictions(index: np.ndarray, pred: np.ndarray) -> None:
    """Every validation image's predicted mask at the best epoch (``pred`` (N, H, W) uint8) with
    its index in the loaded data (``index``): the report's image figures read them from here."""
    def write(folder: str) -> Path:
        path = Path(folder) / Path(VALIDATION_ARTIFACT).name
        np.savez_compressed(path, index=np.asarray(index, np.int64), pred=np.asarray(pred, np.uint8))
        return path

    with tempfile.TemporaryDirectory() as tmp:
        log_artifact(write(tmp), str(Path(VALIDATION_ARTIFACT).parent))


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


@contextlib.contextmanager
def model_saved_alongside(model: Any, enabled: bool = True, artifact_path: str = "model") -> Iterator[None]:
    """Saves ``model`` as ``.keras`` on a thread while the body runs, then logs it to the active run.

    A run's last steps (the final mask grid, the summary, the per-image record) only read the
    trained model, so its save (a few tenths of a second, mostly file writing) overlaps them
    instead of adding to the run. The save's error, if any, is raised here, as a synchronous save's
    would be; the body must not change the model's weights.
    """
    if not enabled:
        yield
        return
    # The pool's exit waits for the save (even when the body raises), before the folder goes.
    with tempfile.TemporaryDirectory(prefix="ablate-model-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ablate-save") as pool:
        path = Path(tmp) / "model.keras"
        saved = pool.submit(model.save, path)
        yield
        saved.result()
        log_artifact(path, artifact_path)


def log_figure(fig: Any, name: str) -> None:
    """Logs a matplotlib figure, or a function that makes one: in a tracked run that function runs
    on the delivery thread (off the training loop), so it must not use pyplot."""
    delivery = resilience.current()
    if delivery is not None:
        delivery.log_figure(fig, name)
        return
    figure = fig() if callable(fig) else fig
    mlflow.log_figure(figure, name)
    if not callable(fig):
        import matplotlib.pyplot as plt

        plt.close(figure)


def __getattr__(name: str) -> Any:
    """``tracking.MlflowLogger``: the Keras callback lives in ``ablate.epoch_logger``, so that
    importing this module (every command that reads the tracking store) needs no TensorFlow."""
    if name == "MlflowLogger":
        from ablate.epoch_logger import MlflowLogger

        return MlflowLogger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
