"""Crash consistency between the queue and MLflow.

A SIGKILLed worker leaves its trial RUNNING (until the heartbeat marks it stale) and its MLflow
run RUNNING (forever). ``reconcile`` fails stale trials (the storage's retry callback queues
them again) and ends every child run whose trial is no longer running: FINISHED if the trial
completed, KILLED otherwise. Workers call it before every trial; ``ablate doctor`` lists the
same findings, and more, across every study.

Example:
    >>> reconcile(study)   # returns how many MLflow runs it ended
    1
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from ablate.adapters import RUN_NAME_TAG, fail_stale, stale_trial_numbers
from ablate.campaign.runs import running_runs

RUN_ID = "mlflow_run_id"  # trial user attribute: the trial's MLflow run
_FINAL_STATUS = {TrialState.COMPLETE: "FINISHED"}  # any other finished trial: KILLED


@dataclass
class Finding:
    """One inconsistency: what is wrong and how ``repair()`` fixes it."""

    what: str  # "trial 3 of ablation.skips" or "run 1a2b... (arm s0)"
    problem: str
    fix: str
    repair: Callable[[], None]
    run_id: str | None = None
    trial_number: int | None = None

    def line(self) -> str:
        return f"{self.what}: {self.problem} -> {self.fix}"


def child_tags(trial: optuna.Trial) -> dict[str, str]:
    """Tags that tie a trial's MLflow run to its trial (what ``orphan_runs`` reads back)."""
    return {"optuna_study": trial.study.study_name, "optuna_trial": str(trial.number)}


def remember_run(trial: optuna.Trial) -> Callable[[str], None]:
    """An ``on_start(run_id)`` callback that records the run on the trial (user attribute ``mlflow_run_id``)."""
    return lambda run_id: trial.set_user_attr(RUN_ID, run_id)


def reconcile(study: optuna.Study, client: MlflowClient | None = None) -> int:
    """Fails stale trials and ends the MLflow runs of trials that are over; returns how many runs it ended."""
    fail_stale(study)
    return end_orphan_runs(study, client)


def tidy(study: optuna.Study) -> None:
    """``reconcile`` for workers: trouble with the tracking server must not stop the queue."""
    fail_stale(study)
    with contextlib.suppress(Exception):
        end_orphan_runs(study)


def end_orphan_runs(study: optuna.Study, client: MlflowClient | None = None) -> int:
    """Ends the MLflow runs of ``study`` whose trial is no longer RUNNING; returns how many."""
    findings = orphan_runs(study, client or MlflowClient())
    for finding in findings:
        finding.repair()
    return len(findings)


def stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[Finding]:
    """RUNNING trials whose worker stopped beating for longer than the grace period."""
    stale = stale_trial_numbers(study, storage)
    if not stale:
        return []  # none, or a storage without heartbeats: liveness cannot be told
    return [Finding(f"trial {n} of {study.study_name}", "RUNNING but its worker stopped beating",
                    "fail it (a retry is queued)", lambda: fail_stale(study), trial_number=n) for n in sorted(stale)]


def orphan_runs(study: optuna.Study, client: MlflowClient, running: list[Run] | None = None,
                stale: Iterable[int] = ()) -> list[Finding]:
    """RUNNING child runs of ``study`` whose trial has ended, is ``stale``, or never reached the storage."""
    running = running_runs(client) if running is None else running
    stale_numbers = set(stale)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    by_run_id = {t.user_attrs[RUN_ID]: t for t in trials.values() if t.user_attrs.get(RUN_ID)}
    findings = []
    for run in running:
        child, trial = _trial_of(run, study.study_name, trials, by_run_id)
        if not child or (trial is not None and trial.state == TrialState.RUNNING and trial.number not in stale_numbers):
            continue  # not a child run of this study, or its trial is still going
        if trial is None:
            state, status = "missing", "KILLED"
        else:
            state = "stale" if trial.number in stale_numbers else trial.state.name
            status = _FINAL_STATUS.get(trial.state, "KILLED")
        findings.append(end_run(client, run, f"RUNNING but its trial is {state}", status))
    return findings


def _trial_of(run: Run, study_name: str, trials: dict[int, FrozenTrial],
              by_run_id: dict[str, FrozenTrial]) -> tuple[bool, FrozenTrial | None]:
    """Whether ``run`` is a child run of the study, and the trial that started it (None if it is gone)."""
    tags = run.data.tags
    number = tags.get("optuna_trial")
    if tags.get("optuna_study") == study_name and number is not None and number.isdigit():
        return True, trials.get(int(number))  # the tag names the trial that started the run, even after a retry
    trial = by_run_id.get(run.info.run_id)
    return trial is not None, trial


def end_run(client: MlflowClient, run: Run, problem: str, status: str, note: str = "") -> Finding:
    """A finding whose repair ends ``run`` with ``status`` and tags it ``ablate.repaired``."""
    run_id = run.info.run_id

    def repair() -> None:
        client.set_tag(run_id, "ablate.repaired", f"{problem}; ended {status} by ablate doctor")
        client.set_terminated(run_id, status)

    name = run.info.run_name or run.data.tags.get(RUN_NAME_TAG, "")
    return Finding(f"run {run_id} ({name})", problem, f"end it {status}{note}", repair, run_id)
