"""Every use of a private or unstable Optuna, MLflow or optuna-dashboard API in the project.

It sits at the bottom of ``ablate``: the campaign engine, ``ablate.resilience`` (image files, the
retried storage calls), ``ablate.doctor`` and the ablation's dashboard notes use it, and nothing
else reaches into these libraries' internals. A release that renames one of them breaks this
module alone, and ``tests/test_adapters.py`` says which one. Each entry names what it relies
on; ``TESTED`` gives the version ranges the entries were checked against (the test fails when
an installed version leaves its range, so that someone looks again).

Example:
    >>> numbers = stale_trial_numbers(study, storage)   # trials whose worker stopped beating
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

# [lowest, first excluded) versions the entries below were written and checked for; the same
# ranges as pyproject.toml, verified on optuna 5.0.0, mlflow 3.17.2 and optuna-dashboard 0.21.0.
TESTED = {"optuna": ("4.5", "6"), "mlflow": ("3.1", "4"), "optuna-dashboard": ("0.17", "1")}

# --- Optuna ------------------------------------------------------------------------------------

# The RDBStorage methods that ablate.resilience retries across a database restart. One of them is
# private (``_get_stale_trial_ids``, which the heartbeat thread and fail_stale_trials call).
RDB_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "get_best_trial",
    "record_heartbeat", "_get_stale_trial_ids",
)


# The logger of Optuna's "Trial N failed ..." warnings (a private module's name), which
# ablate.campaign.failfast replaces by one line of its own.
OPTIMIZE_LOGGER = "optuna.study._optimize"


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial (private ``_trial_id``: the number is per study, the id is not)."""
    return int(trial._trial_id)


def stale_trial_numbers(study: optuna.Study, storage: optuna.storages.BaseStorage) -> set[int] | None:
    """Numbers of RUNNING trials whose worker stopped beating; None for a storage without heartbeats.

    Relies on the private ``RDBStorage._get_stale_trial_ids(study_id)`` (the list Optuna's own
    ``fail_stale_trials`` works from) and ``FrozenTrial._trial_id``.
    """
    get_stale = getattr(storage, "_get_stale_trial_ids", None)
    if get_stale is None or not getattr(storage, "get_heartbeat_interval", lambda: None)():
        return None
    stale = set(get_stale(storage.get_study_id_from_name(study.study_name)))
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return {t.number for t in running if trial_id(t) in stale}


def fail_stale(study: optuna.Study) -> None:
    """Fails trials whose heartbeat stopped; the storage's retry callback queues their retries.

    ``optuna.storages.fail_stale_trials`` is experimental (since 2.9.0).
    """
    with _quiet_experimental():
        optuna.storages.fail_stale_trials(study)


def set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """Names the objective values in the dashboard (``Study.set_metric_names``: experimental)."""
    with _quiet_experimental():
        study.set_metric_names(names)


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the failed trial that ``trial`` retries (None for a first attempt).

    The retry callback keeps this in the system attribute ``failed_trial`` (experimental reader).
    """
    with _quiet_experimental():
        number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return None if number is None else int(number)


def retry_history(trial: FrozenTrial) -> list[int]:
    """The failed trials that ``trial`` retries, oldest first (system attribute ``retry_history``)."""
    with _quiet_experimental():
        return [int(n) for n in RetryHeartbeatStaleTrialCallback.retry_history(trial)]


def queue_retry(study: optuna.Study, trial: FrozenTrial, max_retry: int) -> bool:
    """Queues a retry of the failed ``trial`` as the heartbeat's retry callback does for a stale one.

    ``RetryHeartbeatStaleTrialCallback`` is experimental: it enqueues a copy (parameters, user
    attributes) whose system attributes ``failed_trial`` and ``retry_history`` say what it retries.
    Returns False when ``trial`` was already retried ``max_retry`` times (nothing queued).
    """
    before = len(study.get_trials(deepcopy=False))
    with _quiet_experimental():
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)
    return len(study.get_trials(deepcopy=False)) > before


@contextmanager
def _quiet_experimental() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def rdb_method(name: str) -> Any:
    """``RDBStorage.<name>``, for the reconnecting wrapper in ``ablate.resilience``."""
    return getattr(RDBStorage, name)


# --- optuna-dashboard --------------------------------------------------------------------------

def save_note(study_or_trial: optuna.Study | optuna.Trial, body: str) -> None:
    """The Markdown note the dashboard shows on a study's page or a trial's row.

    ``optuna_dashboard.save_note`` stores it in study system attributes through Optuna's private
    ``Study._storage``, ``Study._study_id`` and ``Trial._trial_id``; on a trial it needs a live
    ``optuna.Trial`` (inside the objective), not a FrozenTrial.

    optuna-dashboard is in the ``team`` extra: without it, no note is written (the study and its
    runs are complete without one; only the dashboard reads notes).
    """
    try:
        from optuna_dashboard import save_note as dashboard_save_note
    except ImportError:
        return
    dashboard_save_note(study_or_trial, body)


def get_note(study_or_trial: optuna.Study | optuna.Trial) -> str:
    """The note written by :func:`save_note` ("" when none, or without optuna-dashboard)."""
    try:
        from optuna_dashboard import get_note as dashboard_get_note
    except ImportError:
        return ""

    return str(dashboard_get_note(study_or_trial))


# --- MLflow --------------------------------------------------------------------------------

# System tags the MLflow UI reads (mlflow.utils.mlflow_tags).
NOTE_TAG = "mlflow.note.content"  # a run's description
PARENT_TAG = "mlflow.parentRunId"  # nests a child run under its parent
RUN_NAME_TAG = "mlflow.runName"
LOGGED_IMAGES_TAG = "mlflow.loggedImages"  # makes the UI show a run's image grid


def image_files(image: Any, key: str, step: int, folder: Path) -> list[str]:
    """Writes a step of an image series as ``MlflowClient.log_image`` would; returns the file names.

    The run's UI shows them as an image grid when they are logged under ``images/`` and the run
    has the tag ``LOGGED_IMAGES_TAG``. Uses the private ``mlflow.tracking.multimedia`` helpers
    and MLflow's file-name convention ``KEY+step+N+timestamp+MS+UUID`` (``/`` in the key as ``~``).
    """
    from mlflow.tracking.multimedia import compress_image_size, convert_to_pil_image

    pil = convert_to_pil_image(image)
    stem = f"{key.replace('/', '~')}+step+{step}+timestamp+{int(time.time() * 1000)}+{uuid.uuid4()}"
    pil.save(folder / f"{stem}.png")
    compress_image_size(pil).save(folder / f"{stem}+compressed.webp")
    return [f"{stem}.png", f"{stem}+compressed.webp"]
