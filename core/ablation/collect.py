"""Reads an ablation back from MLflow alone: its parent run, its arms and child runs."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ablate.campaign.runs import child_runs
from ablate.errors import AblateError, SpecError
from ablate.task import MARS, TASK_FILE, Task, task_from_dict


def class_metrics(task: Task = MARS) -> list[str]:
    """The summary metric of each scored class of ``task``: ``best_val_iou_<name>``."""
    return [f"best_val_iou_{name}" for name in task.scored_names]


CLASS_METRICS = class_metrics(MARS)  # the Mars task's; an ablation's own are ``AblationRecord.class_metrics``
COST_METRICS = ["params", "flops_per_image", "train_time_s", "latency_ms_per_image", "epochs_run"]


@dataclass
class AblationRecord:
    """The parent run, the ablation definition logged on it, and one row per (arm, seed)."""

    parent_run_id: str
    experiment_id: str
    payload: dict[str, Any]
    runs: pd.DataFrame
    task: Task = MARS  # the task its runs trained for (their task.json)

    @property
    def name(self) -> str:
        return str(self.payload["name"])

    @property
    def class_metrics(self) -> list[str]:
        """``best_val_iou_<name>`` of each class the task scores."""
        return class_metrics(self.task)


def run_task(client: MlflowClient, run_id: str) -> Task | None:
    """The task a run logged (``task.json``); None for a run without one (it trained before tasks: Mars)."""
    try:
        return task_from_dict(json.loads(_read_text(client, run_id, TASK_FILE)), f"{TASK_FILE} of run {run_id}")
    except (mlflow.exceptions.MlflowException, OSError, ValueError, SpecError):
        return None


def find_parent(ref: str) -> mlflow.entities.Run:
    """A parent run by id, or the latest ablation parent run in experiment ``ref``."""
    client = MlflowClient()
    try:
        run = client.get_run(ref)
        if run.data.tags.get("ablate.kind") == "ablation":
            return run
    except mlflow.exceptions.MlflowException:
        pass
    exp = client.get_experiment_by_name(ref)
    if exp is None:
        raise AblateError(f"'{ref}' is neither an ablation parent run id nor an ablation name in this tracking store.")
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.kind` = 'ablation'", order_by=["start_time DESC"],
                              max_results=1)
    if not runs:
        raise AblateError(f"Experiment '{ref}' holds no ablation parent run.")
    return runs[0]


def collect(ref: str) -> AblationRecord:
    """One row per (arm, seed) of the current definition: the latest FINISHED run, else the latest run."""
    client = MlflowClient()
    parent = find_parent(ref)
    pid, exp_id = parent.info.run_id, parent.info.experiment_id
    payload = json.loads(_read_text(client, pid, "ablation.json"))
    wanted = {(a["spec_hash"], str(s)): k for k, a in payload["arms"].items() for s in payload["seeds"]}
    rows, task = [], None
    for run in child_runs(client, parent):
        tags = run.data.tags
        key = (tags.get("arm_hash"), tags.get("seed"))
        if key not in wanted:
            continue  # a run of an earlier definition of this ablation
        if task is None and run.info.status == "FINISHED":
            task = run_task(client, run.info.run_id) or MARS  # the arms of one ablation share their data
        metrics = class_metrics(task or MARS)
        arm = payload["arms"][wanted[key]]
        row = {"variant": wanted[key], "factor": arm["factor"], "label": arm["variant"], "seed": int(key[1]),
               "status": run.info.status, "run_id": run.info.run_id, "start_time": run.info.start_time}
        row["val_miou"] = run.data.metrics.get("best_val_miou", float("nan"))
        for m in metrics + COST_METRICS:
            row[m] = run.data.metrics.get(m, float("nan"))
        rows.append(row)
    task = task or MARS
    runs = pd.DataFrame(rows, columns=["variant", "factor", "label", "seed", "status", "run_id", "start_time",
                                       "val_miou", *class_metrics(task), *COST_METRICS])
    return AblationRecord(pid, exp_id, payload, _one_per_pair(runs), task)


def _one_per_pair(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return runs
    runs = runs.assign(_ok=runs["status"].eq("FINISHED")).sort_values(["_ok", "start_time"])
    return runs.groupby(["variant", "seed"], as_index=False).tail(1).drop(columns="_ok").sort_values(
        ["variant", "seed"]).reset_index(drop=True)


def _read_text(client: MlflowClient, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_text()

