"""The parent MLflow run of a campaign: one per queue, every trial's run is its child.

The parent's id is kept on the study (user attribute ``mlflow_parent_run_id``), so a second
invocation, or a worker on another machine, finds it. It is RUNNING while the campaign runs
and ends FINISHED, KILLED (interrupted: running the same command again resumes it) or FAILED.

Example:
    >>> parent = ensure_parent(study, ParentRun("skips", tags={"ablation": "skips"}, files={"ablation.json": text}))
    >>> end_parent(study, "FINISHED", metrics={"trials_complete": 8})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from ablate import tracking
from ablate.adapters import NOTE_TAG
from ablate.campaign.queue import KIND
from ablate.errors import AblateError

PARENT = "mlflow_parent_run_id"  # study user attribute
TRACKING_URI = "mlflow_tracking_uri"  # study user attribute: the store the parent run is in
STATUSES = ("RUNNING", "FINISHED", "KILLED", "FAILED")
PARAM_MAX = 500  # characters of a logged parameter value
FAILURE_TAG = "ablate.failure"  # parent run tag: why the campaign ended FAILED
FAILURE_MAX = 1000  # characters of that reason


@dataclass(frozen=True)
class ParentRun:
    """What a campaign's parent run records.

    Args:
        experiment: the MLflow experiment (created when missing); also the run's name.
        tags: set when the run is created, besides ``ablate.kind``, ``optuna_study`` and git.
        params: logged when the run is created.
        files: text artifacts (the campaign's definition), written on every start.
        start_tags: tags set on every start (what may change between invocations).
    """

    experiment: str
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    start_tags: Mapping[str, str] = field(default_factory=dict)


def ensure_parent(study: optuna.Study, run: ParentRun) -> str:
    """The study's parent run: created once, set RUNNING again on resume; returns its id.

    A parent id that the current tracking store does not hold (a new store) starts a new parent.
    """
    client = MlflowClient()
    exp_id = tracking.ensure_experiment(run.experiment)
    study.set_user_attr(TRACKING_URI, mlflow.get_tracking_uri())
    parent = study.user_attrs.get(PARENT)
    if parent and _in_experiment(client, parent, exp_id):
        client.update_run(parent, status="RUNNING")
    else:
        tags = {KIND: str(study.user_attrs.get(KIND)), "optuna_study": study.study_name, **run.tags,
                **tracking.git_info()}
        parent = client.create_run(exp_id, run_name=run.experiment, tags=tags).info.run_id
        for key, value in run.params.items():
            client.log_param(parent, key, str(value)[:PARAM_MAX])
        study.set_user_attr(PARENT, parent)
    for name, text in run.files.items():
        client.log_text(parent, text, name)
    for key, value in run.start_tags.items():
        client.set_tag(parent, key, value)
    return str(parent)


def _in_experiment(client: MlflowClient, run_id: str, exp_id: str) -> bool:
    try:
        return bool(client.get_run(run_id).info.experiment_id == exp_id)
    except mlflow.exceptions.MlflowException:
        return False


def parent_of(study: optuna.Study) -> str | None:
    parent = study.user_attrs.get(PARENT)
    return None if parent is None else str(parent)


def require_parent(study: optuna.Study) -> str:
    """The parent run id, checked against the tracking store (a worker pointed at the wrong store).

    Raises:
        AblateError: the study has no parent run, or the tracking store does not hold it.
    """
    parent = parent_of(study)
    if parent is None:
        raise AblateError(f"Study '{study.study_name}' has no MLflow parent run: it was not created by ablate.")
    try:
        MlflowClient().get_run(parent)
    except mlflow.exceptions.MlflowException:
        raise AblateError(
            f"The MLflow parent run {parent} of '{study.study_name}' is not in the tracking store "
            f"{mlflow.get_tracking_uri()}; pass --tracking-uri {study.user_attrs.get(TRACKING_URI)} "
            f"(the store it was created with)."
        ) from None
    return parent


def note_failure(study: optuna.Study, error: BaseException) -> None:
    """Says why the campaign failed on its parent run: tag ``ablate.failure`` and the run's
    description, where the MLflow UI shows it first."""
    parent = parent_of(study)
    if parent is None:
        return
    client = MlflowClient()
    reason = str(error) if isinstance(error, AblateError) else f"{type(error).__name__}: {error}"
    reason = reason.strip()[:FAILURE_MAX]
    client.set_tag(parent, FAILURE_TAG, reason)
    client.set_tag(parent, NOTE_TAG, f"**Failed**: {reason}")


def end_parent(study: optuna.Study, status: str = "FINISHED", metrics: Mapping[str, float] | None = None,
               tags: Mapping[str, str] | None = None) -> bool:
    """Ends the parent run (if it is RUNNING) with ``metrics`` and ``tags``; False if there was none to end."""
    if status not in STATUSES[1:]:
        raise AblateError(f"A parent run ends FINISHED, KILLED or FAILED, not {status!r}.")
    parent = parent_of(study)
    if parent is None:
        return False
    client = MlflowClient()
    try:
        if client.get_run(parent).info.status != "RUNNING":
            return False
    except mlflow.exceptions.MlflowException:
        return False
    for key, text in (tags or {}).items():
        client.set_tag(parent, key, text)
    for key, value in (metrics or {}).items():
        client.log_metric(parent, key, float(value))
    client.set_terminated(parent, status)
    return True
