"""Logging the exported model to MLflow as a pyfunc and moving the ``champion`` alias to it.

The pyfunc is logged *from code* (``pyfunc_model.py``) with the SavedModel as its artifact, so
it loads and serves without this project: ``mlflow models serve -m models:/NAME@champion
--env-manager local`` answers ``POST /invocations`` with ``{"inputs": images}``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from ablate.errors import AblateError
from ablate.task import MARS, Task

ALIAS = "champion"  # MLflow aliases replace the deprecated stages ("Production")
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def signature(task: Task = MARS) -> ModelSignature:
    """Input: a batch of images; output: masks (N, H, W) uint8 of the task.

    The input spec is an object tensor because the pyfunc accepts several layouts (uint8 or
    float, with or without a channel axis; MLflow enforces one dtype and rank per tensor spec
    and would otherwise refuse all but one). ``pyfunc_model.as_images`` validates the input
    and the input example shows the canonical form: (N, H, W) uint8 (grayscale) or
    (N, H, W, 3) uint8 (RGB).
    """
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(object), (-1,), name=None)]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, task.height, task.width))]),
    )


def requirements() -> list[str]:
    """Pinned to the exporting environment (explicit, so MLflow need not infer them)."""
    import tensorflow as tf

    return [f"mlflow=={mlflow.__version__}", f"tensorflow=={tf.__version__}", f"numpy=={np.__version__}"]


def log_pyfunc(saved_model: Path, model_name: str, example: np.ndarray, description: dict[str, Any],
               task: Task = MARS, task_file: Path | None = None) -> str:
    """Logs the pyfunc into the active run, registers a new version of ``model_name``; returns it.

    ``task_file`` (the export's ``task.json``) is logged with it, so the pyfunc knows the task's
    size, channels and classes without this project.
    """
    artifacts = {"saved_model": str(saved_model)}
    if task_file is not None:
        artifacts["task"] = str(task_file)
    try:
        with warnings.catch_warnings():
            # MLflow asks for type hints on predict(); the explicit signature describes the input.
            warnings.filterwarnings("ignore", message=r".*[Tt]ype hint", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_FILE),
                artifacts=artifacts,
                signature=signature(task),
                input_example=example,
                pip_requirements=requirements(),
                registered_model_name=model_name,
                metadata=description,
            )
    except MlflowException as e:
        raise AblateError(f"Logging the model '{model_name}' to MLflow failed: {e.message}") from e
    if info.registered_model_version is None:
        raise AblateError(f"MLflow did not register a version of '{model_name}'; check the tracking store.")
    return str(info.registered_model_version)


def tag_version(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def move_alias(client: MlflowClient, name: str, version: str) -> None:
    """Points ``models:/NAME@champion`` at ``version`` (an alias is unique: this moves it)."""
    client.set_registered_model_alias(name, ALIAS, version)


def pyfunc_predictor(uri: str) -> Any:
    """``uint8 images -> masks`` of a logged pyfunc (``models:/NAME/VERSION``)."""
    model = mlflow.pyfunc.load_model(uri)
    return lambda images: np.asarray(model.predict(images))
