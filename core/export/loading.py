"""The model ``ablate predict`` uses: from a path, ``models:/``, ``runs:/`` or a run id, running no stored code.

What is loaded, and why that is safe:

- a ``.keras`` file, with Keras safe mode (a stored ``Lambda`` function is refused, not run);
  see :func:`ablate.export.formats.load_keras`, which also checks the model's shapes;
- a SavedModel folder, with ``tf.saved_model.load``: it restores TensorFlow graphs and weights
  and imports no Python from the folder (a graph can still read or write files when called, so
  use SavedModels you trust). Its ``serving_default`` must map ``images`` to ``masks``;
- an MLflow URI is resolved to the run's or logged model's artifacts, and only ``model.keras``
  or a SavedModel is downloaded and loaded as above. ``mlflow.pyfunc.load_model`` is never
  called: it imports and runs Python stored in the tracking store.

The predictor knows its task (``predictor.task``): from the SavedModel's ``assets.extra/task.json``,
the export folder's ``task.json`` or ``preprocessing.json``, or the run's ``task.json``; a model
with none of these (saved before tasks existed) is the Mars task, and must fit it.

Example:
    >>> predictor = load_predictor("models:/mars-seg@champion")
    >>> masks = predictor(images)  # float32 (n, H, W, C) in [0, 1] -> uint8 (n, H, W)
    >>> predictor.task.classes
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ablate.errors import AblateError, SpecError
from ablate.task import MARS, TASK_FILE, Task, task_from_dict

Predictor = Callable[[np.ndarray], np.ndarray]  # float32 (n, H, W, C) in [0, 1] -> uint8 masks (n, H, W)
SAVED_MODEL_TASK = f"assets.extra/{TASK_FILE}"  # where ablate.export.formats.write_saved_model puts it
RUN_ID = re.compile(r"[0-9a-f]{32}")
STORE_SCHEMES = ("models:/", "runs:/")
# Where a model's weights sit in the store, first match wins: `ablate export`'s bundle (export/),
# a training run (model/model.keras), the pyfunc's SavedModel artifact (artifacts/saved_model).
KERAS_FILES = ("model.keras", "model/model.keras")
SAVED_MODEL_DIRS = ("", "saved_model", "artifacts/saved_model")


@dataclass(frozen=True)
class TaskPredictor:
    """A loaded model: ``float32 (n, H, W, C) in [0, 1] -> uint8 masks (n, H, W)``, and its task."""

    predict: Predictor
    task: Task

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)


def load_predictor(ref: str) -> TaskPredictor:
    """A predictor from an export folder, a ``.keras`` file, a SavedModel folder, ``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH`` or a run id (MLflow's tracking URI set first)."""
    if ref.startswith(STORE_SCHEMES):
        return _from_store(ref, _run_roots(ref) if ref.startswith("runs:/") else _version_roots(ref))
    path = Path(ref)
    if path.is_dir():
        return _from_folder(path)
    if path.suffix == ".keras":
        return _keras(path)  # a missing or corrupt file gets its own message
    if RUN_ID.fullmatch(ref) and not path.exists():
        return _from_store(ref, _run_roots(ref))
    if path.is_file():
        raise AblateError(f"Model '{ref}' is neither a .keras file nor a folder; expected an export folder (with "
                          "saved_model/ or model.keras), a .keras file or a SavedModel folder.")
    raise AblateError(f"Model '{ref}' not found: expected an export folder (with saved_model/ or model.keras), a "
                      ".keras file, models:/NAME@ALIAS, runs:/RUN_ID/PATH or a 32-character MLflow run id.")


def _from_folder(path: Path) -> TaskPredictor:
    if (path / "saved_model").is_dir():  # an export folder: checked in-graph preprocessing included
        return _saved_model(path / "saved_model", folder_task(path))
    if (path / "saved_model.pb").exists() or (path / "variables").is_dir():
        return _saved_model(path)
    if (path / "model.keras").exists():
        return _keras(path / "model.keras", folder_task(path))
    raise AblateError(f"Folder '{path}' holds no saved_model/ or model.keras; expected an `ablate export` folder.")


def read_task_file(file: Path) -> Task:
    """A ``task.json`` (or ``preprocessing.json``, whose ``task`` key holds it) as a Task; one-line error if invalid."""
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        if file.name != TASK_FILE:
            raw = raw["task"]
        return task_from_dict(raw, file.name)
    except (OSError, ValueError, KeyError, TypeError, SpecError) as e:
        raise AblateError(f"'{file}' does not hold a valid task ({_excerpt(e)}); re-export the model with "
                          "`ablate export`.") from None


def folder_task(folder: Path) -> Task | None:
    """The task an export folder records (``task.json``, else ``preprocessing.json``'s); None if neither."""
    if (folder / TASK_FILE).is_file():
        return read_task_file(folder / TASK_FILE)
    prep = folder / "preprocessing.json"
    if prep.is_file():
        try:
            has_task = "task" in json.loads(prep.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            has_task = False
        if has_task:
            return read_task_file(prep)
    return None


def _keras(path: Path, task: Task | None = None) -> TaskPredictor:
    from ablate.export.formats import load_keras

    task = task or folder_task(path.parent)
    where = "its folder's task.json" if task is not None else "no task.json beside it, so the Mars task"
    model = load_keras(path, task or MARS, source=where if task is not None else "")  # safe mode, shapes checked
    return TaskPredictor(lambda x: np.argmax(model.predict_on_batch(x), axis=-1).astype(np.uint8), task or MARS)


def _saved_model(path: Path, task: Task | None = None) -> TaskPredictor:
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file():
        raise AblateError(f"SavedModel folder '{path}' is broken: it has no saved_model.pb; re-export it with "
                          "`ablate export`.")
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError) as e:
        raise AblateError(f"SavedModel '{path}' is corrupt or unreadable ({_excerpt(e)}); re-export it with "
                          "`ablate export`.") from None
    serve = loaded.signatures.get("serving_default") if hasattr(loaded, "signatures") else None
    if (path / SAVED_MODEL_TASK).is_file():  # the SavedModel's own record wins over its folder's
        task = read_task_file(path / SAVED_MODEL_TASK)
    task = task or MARS  # a SavedModel exported before tasks existed: the Mars task
    _check_signature(serve, path, task)
    return TaskPredictor(lambda x: serve(images=tf.constant(x))["masks"].numpy(), task)  # `loaded` lives in `serve`


def _check_signature(serve: Any, path: Path, task: Task = MARS) -> None:
    """``serving_default`` must take ``images`` and return ``masks`` (N, H, W), as `ablate export` writes."""
    if serve is None:
        raise AblateError(f"SavedModel '{path}' has no serving_default signature; expected one written by "
                          "`ablate export` (images -> masks).")
    inputs = dict(serve.structured_input_signature[1])
    outputs = dict(serve.structured_outputs)
    masks = outputs.get("masks")
    if "images" in inputs and masks is not None and tuple(masks.shape)[1:] == (task.height, task.width):
        return
    raise AblateError(f"SavedModel '{path}' takes {{{_specs(inputs)}}} and gives {{{_specs(outputs)}}}; expected "
                      f"images -> masks (None, {task.height}, {task.width}), as `ablate export` writes.")


def _specs(specs: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {tuple(v.shape) if v.shape.rank is not None else '(any)'}" for k, v in specs.items())[:100]


# --- the tracking store --------------------------------------------------------------------------

def _run_roots(ref: str) -> list[str]:
    """``runs:/ID/PATH`` itself, or a run id's model/ and export/ folders, once the run is known to exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    run_id = ref.removeprefix("runs:/").partition("/")[0]
    try:
        MlflowClient().get_run(run_id)  # else an unknown run would read as a run without a model
    except MlflowException as e:
        raise _store_error(ref, e) from None
    return [ref] if ref.startswith("runs:/") else [f"runs:/{ref}/model", f"runs:/{ref}/export"]


def _version_roots(uri: str) -> list[str]:
    """Artifact URIs of a registered version (its run's export/ first) or of a logged model ``models:/m-...``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client, body = MlflowClient(), uri.removeprefix("models:/")
    try:
        if "@" in body or "/" in body:
            name, sep, rest = body.partition("@") if "@" in body else body.partition("/")
            mv = (client.get_model_version_by_alias(name, rest) if sep == "@"
                  else client.get_model_version(name, rest))
            roots = [f"runs:/{mv.run_id}/export"] if mv.run_id else []
            if getattr(mv, "model_id", None):
                roots.append(client.get_logged_model(mv.model_id).artifact_location)
            elif mv.source and not mv.source.startswith("models:/"):
                roots.append(mv.source)
            return roots
        return [client.get_logged_model(body).artifact_location]
    except MlflowException as e:
        raise _store_error(uri, e) from None


def _from_store(uri: str, roots: list[str]) -> TaskPredictor:
    """Downloads the first model.keras or SavedModel found under ``roots`` and loads it safely."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tmp = tempfile.mkdtemp(prefix="ablate-model-")
    try:
        for root in roots:
            found = _find(root)
            if found is not None:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=found[0], dst_path=tmp))
                task = _store_task(root, Path(tmp) / "task")
                return _keras(local, task) if found[1] == "keras" else _saved_model(local, task)
    except (MlflowException, OSError) as e:
        raise _store_error(uri, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # both formats are in memory once loaded
    raise AblateError(f"'{uri}' has no model.keras or SavedModel artifact; predict never runs a logged model's "
                      "Python code (a pyfunc): log the model with `ablate run` or `ablate export`.")


def _store_task(root: str, dst: Path) -> Task | None:
    """The task recorded beside a model in the store: ``ROOT/task.json``, else the run's own ``task.json``."""
    import mlflow

    candidates = [root.rpartition("/")[0] if root.endswith(".keras") else root]
    if root.startswith("runs:/"):
        candidates.append("runs:/" + root.removeprefix("runs:/").partition("/")[0])  # the run's root
    for folder in candidates:
        if _exists(folder, TASK_FILE):
            dst.mkdir(parents=True, exist_ok=True)
            uri = f"{folder.rstrip('/')}/{TASK_FILE}"
            return read_task_file(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))))
    return None


def _find(root: str) -> tuple[str, str] | None:
    """(artifact URI, "keras" or "saved_model") of the first model under ``root``, listing only."""
    if root.endswith(".keras"):
        return root, "keras"
    for name in KERAS_FILES:
        if _exists(root, name):
            return f"{root}/{name}", "keras"
    for name in SAVED_MODEL_DIRS:
        if _exists(root, f"{name}/saved_model.pb".lstrip("/")):
            return (f"{root}/{name}" if name else root), "saved_model"
    return None


def _exists(root: str, rel: str) -> bool:
    """Whether the file ``root/rel`` is in the store (one listing of its folder, nothing downloaded)."""
    from mlflow.artifacts import list_artifacts
    from mlflow.exceptions import MlflowException

    parent, _, name = f"{root.rstrip('/')}/{rel}".rpartition("/")
    if parent.startswith("runs:/") and "/" not in parent.removeprefix("runs:/"):
        parent += "/"  # a run's root: MLflow needs runs:/ID/
    try:
        return any(f.path.rstrip("/").rpartition("/")[2] == name and not f.is_dir
                   for f in list_artifacts(artifact_uri=parent))
    except (MlflowException, OSError):
        return False  # a folder that is not there


def _store_error(uri: str, e: BaseException) -> AblateError:
    import mlflow

    from ablate.resilience import redact_text

    return AblateError(f"Could not read '{uri}' from the tracking store at {redact_text(mlflow.get_tracking_uri())}: "
                       f"{_excerpt(e)}. Check the name, alias or run id and --tracking-uri.")


def _excerpt(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:150]
