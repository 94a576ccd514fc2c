"""Crash consistency between the Optuna queue and MLflow.

A SIGKILLed worker leaves its trial RUNNING (until the heartbeat fails it) and its MLflow run
RUNNING (forever). ``reconcile`` fails stale trials (they are re-queued by the storage's
retry callback) and ends every MLflow run whose trial is no longer running as KILLED.
"""

from __future__ import annotations

import contextlib

import mlflow
import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState


def reconcile(study: optuna.Study) -> list[str]:
    """Fails stale trials and ends orphaned MLflow runs; returns the run ids it ended."""
    optuna.storages.fail_stale_trials(study)
    client = MlflowClient()
    ended = []
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id or trial.state == TrialState.RUNNING:
            continue
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "error", f"worker lost; trial {trial.number} ended {trial.state.name}")
                client.set_terminated(run_id, "KILLED")
                ended.append(run_id)
    return ended
