"""One study on the campaign engine: create or resume it, count its budget, run its trials.

The Optuna study (the engine's queue) is the shared state: its user attributes hold the
resolved study (so workers anywhere need no file), the MLflow parent run id and an optional
deadline. Each trial is one
child run of the parent (tags ``ablate.kind=trial``, ``study``, ``trial_number``); the trial's
user attribute ``mlflow_run_id`` points back. A pruned trial's run ends KILLED, a failed one
FAILED; ``reconcile`` ends the runs of workers that died.

The trial budget is counted over all workers: finished trials (complete, pruned, failed and not
retried), running ones and queued retries. A trial that a worker starts when another worker has
just taken the last slot is *surplus*: it is marked ``ablate.surplus`` and pruned at once,
without an MLflow run, and no count or report includes it. Optuna cannot un-create a trial, so
this is what keeps N workers at exactly the requested number of trials.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

import keras
import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from ablate import adapters
from ablate.campaign import (
    Counts,
    ParentRun,
    Round,
    TrialKind,
    child_tags,
    end_parent,
    ensure_parent,
    open_queue,
    reconcile,
    remember_run,
    require_parent,
    tally,
)
from ablate.campaign.liveness import epoch_beats
from ablate.errors import AblateError, SpecError
from ablate.spec import check_buildable
from ablate.study.space import StudyDef

KIND = "study"
PAYLOAD = "ablate.study"  # study user attr: StudyDef.payload()
HASH = "ablate.definition_hash"
DEADLINE = "ablate.deadline"  # unix time after which no trial starts (--timeout)
SURPLUS = "ablate.surplus"


# --- create or resume ----------------------------------------------------------------------

def prepare(plan: StudyDef, storage: optuna.storages.BaseStorage, timeout: float | None = None) -> optuna.Study:
    """Creates or resumes the study and its MLflow parent run (call ``tracking.setup`` first).

    A study of the same name but another base spec, space or objectives is an error: its trials
    would not be comparable. The trial budget, sampler and pruner may change between runs.
    """
    study = open_queue(plan.name, storage, KIND, directions=plan.directions, sampler=plan.make_sampler(),
                       pruner=plan.make_pruner())
    old = study.user_attrs.get(HASH)
    if old is not None and old != plan.definition_hash():
        raise AblateError(f"Study '{plan.name}' already exists in this storage with another base spec, space or "
                          f"objectives; give the study a new name (or delete the old one with "
                          f"`optuna delete-study --study-name {plan.name} --storage URL`).")
    if [d.name.lower() for d in study.directions] != plan.directions:
        raise AblateError(f"Study '{plan.name}' exists with directions {study.directions}, not {plan.directions}.")
    study.set_user_attr(PAYLOAD, plan.payload())
    study.set_user_attr(HASH, plan.definition_hash())
    study.set_user_attr(DEADLINE, time.time() + timeout if timeout else None)
    adapters.set_metric_names(study, plan.metric_names)
    ensure_parent(study, parent_run(plan))
    reconcile(study)
    return study


def parent_run(plan: StudyDef) -> ParentRun:
    """What the study's parent run records: the definition (``study.json``), sampler, pruner, space."""
    params = {"sampler": plan.sampler["type"], "pruner": plan.pruner["type"], "space": ",".join(plan.params),
              "objectives": ",".join(plan.metric_names), "epochs": plan.base["train"]["epochs"],
              "data_limit": plan.base["data"]["limit"]}
    return ParentRun(plan.name, tags={"study": plan.name, "objectives": ",".join(
        f"{o.metric}:{o.direction}" for o in plan.objectives)}, params=params,
        files={"study.json": json.dumps(plan.payload(), indent=2, sort_keys=True)},
        start_tags={"n_trials": str(plan.n_trials)})


def plan_of(study: optuna.Study) -> StudyDef:
    payload = study.user_attrs.get(PAYLOAD)
    if not payload:
        raise AblateError(f"Optuna study '{study.study_name}' was not created by `ablate study run`.")
    return StudyDef.from_payload(payload)


# --- the trial budget ----------------------------------------------------------------------

def budget_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count towards the budget: no surplus, no failed trial that was retried."""
    retried = {n for t in trials for n in adapters.retry_history(t)}
    return [t for t in trials if not t.user_attrs.get(SURPLUS)
            and not (t.state == TrialState.FAIL and t.number in retried)]


def counts(study: optuna.Study, plan: StudyDef | None = None) -> Counts:
    """The budget's trials by state (surplus trials and retried failures left out); total: the budget."""
    plan = plan or plan_of(study)
    return tally(budget_trials(study.get_trials(deepcopy=False)), total=plan.n_trials)


def best_text(study: optuna.Study, plan: StudyDef) -> str:
    if len(plan.objectives) > 1:
        n = len(study.best_trials) if _has_complete(study) else 0
        return f"{n} on the Pareto front"
    if not _has_complete(study):
        return "-"
    return f"{plan.metric_names[0]} {study.best_value:.4f} (#{study.best_trial.number})"


def _has_complete(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def has_budget(study: optuna.Study) -> bool:
    """Whether a worker should start another trial (the study's ``TrialKind.has_work``).

    True while queued retries exist or fewer trials than the budget are claimed; False past the
    ``--timeout`` deadline. Once nothing is left to run or running, it ends the parent run.
    (While other workers' trials run, the worker waits and asks again: should one of them be
    lost, its retry is queued and taken.)
    """
    plan = plan_of(study)
    c = counts(study, plan)
    deadline = study.user_attrs.get(DEADLINE)
    if deadline is None or time.time() <= float(deadline):
        if c.waiting or c.claimed < c.total:
            return True
    if not c.running and not c.waiting:
        finish_parent(study, plan)
    return False


def _over_budget(number: int, trials: list[FrozenTrial], n_trials: int) -> bool:
    """Whether trials numbered before ``number`` claimed the whole budget (a race between workers)."""
    return len([t for t in budget_trials(trials) if t.number < number]) >= n_trials


def finish_parent(study: optuna.Study, plan: StudyDef | None = None, status: str = "FINISHED") -> None:
    """Ends the parent run (if it is RUNNING) with the study's counts and best value as metrics."""
    plan = plan or plan_of(study)
    c = counts(study, plan)
    metrics: dict[str, float] = {"trials_complete": c.complete, "trials_pruned": c.pruned, "trials_failed": c.failed}
    tags = {}
    if len(plan.objectives) == 1 and _has_complete(study):
        metrics[f"best_{plan.metric_names[0]}"] = float(study.best_value)
        tags["best_trial"] = str(study.best_trial.number)
    end_parent(study, status, metrics, tags)


def study_round(study: optuna.Study, plan: StudyDef) -> Round:
    """What the engine's progress bar shows: finished trials of the budget, pruned, failed, best."""
    from ablate.study.report import trial_line

    def describe(trial: FrozenTrial) -> str | None:
        return None if trial.user_attrs.get(SURPLUS) else f"trial #{trial.number}: {trial_line(trial, plan)}"

    def postfix(st: optuna.Study, c: Counts) -> str:
        return f"pruned {c.pruned}, failed {c.failed}, running {c.running}; best {best_text(st, plan)}"

    return Round(plan.name, "trial", counts=lambda st: counts(st, plan), describe=describe, postfix=postfix)


# --- the objective -------------------------------------------------------------------------

class PruningCallback(keras.callbacks.Callback):
    """Reports a validation metric to the trial after every epoch; stops training when pruned.

    Steps are epochs completed (1, 2, ...). A pruned trial stops at the end of that epoch and
    its run is completed as usual (best-epoch figures, masks, confusion matrix: the record of a
    pruned trial is kept); ``StudyObjective`` then ends the run KILLED and raises
    ``optuna.TrialPruned``.

    Example:
        >>> model.fit(train, validation_data=val, callbacks=[PruningCallback(trial, "val_miou")])
    """

    def __init__(self, trial: optuna.Trial, metric: str = "val_miou") -> None:
        super().__init__()
        self.trial = trial
        self.metric = metric
        self.epochs = 0
        self.pruned: str | None = None  # why, once pruned

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs = epoch + 1
        value = (logs or {}).get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), step=self.epochs)
        last = self.epochs >= int((self.params or {}).get("epochs") or 0) > 0  # nothing left to save
        if not last and self.trial.should_prune():
            self.pruned = f"pruned after epoch {self.epochs}: {self.metric} {float(value):.4f}"
            self.model.stop_training = True


class StudyObjective:
    """The Optuna objective of a study: trial -> spec overrides -> tracked run -> objective value(s).

    It also installs the study's own sampler and pruner on ``study`` (a loaded study has Optuna's
    defaults). Workers started by ``ablate study run --workers N`` get seed offsets 0..N-1
    (``ABLATE_WORKER_INDEX``); a worker started by hand without it gets its process id, so that
    parallel workers do not repeat each other's random start-up trials.
    """

    def __init__(self, study: optuna.Study, verbose: int = 0, seed_offset: int | None = None) -> None:
        self.plan = plan_of(study)
        self.parent = require_parent(study)
        self.verbose = verbose
        if seed_offset is None:
            index = os.environ.get("ABLATE_WORKER_INDEX")
            seed_offset = int(index) if index is not None else os.getpid()
        study.sampler = self.plan.make_sampler(seed_offset)
        study.pruner = self.plan.make_pruner()
        self._splits: dict[str, Any] = {}

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        from ablate.runner import run_spec

        trials = trial.study.get_trials(deepcopy=False)
        if _over_budget(trial.number, trials, self.plan.n_trials):
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned("surplus: another worker took the last trial of the budget")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        spec, labels = self.plan.spec_for(trial)
        try:
            check_buildable(spec)
        except SpecError as e:
            # One sampled combination whose blocks do not fit together (each choice alone was
            # checked when the file loaded): this point of the space is infeasible, the study is
            # not broken, so the trial is pruned with the reason rather than failing the study.
            trial.set_user_attr("infeasible", str(e)[:500])
            raise optuna.TrialPruned(f"infeasible combination: {e}") from None
        trial.set_user_attr("spec_hash", spec.spec_hash)
        tags = {"ablate.kind": "trial", "study": self.plan.name, "trial_number": str(trial.number),
                "trial_params": json.dumps(labels, sort_keys=True)[:5000], **child_tags(trial)}
        retried = adapters.retried_from(next(t for t in trials if t.number == trial.number))
        if retried is not None:
            tags["retry_of"] = str(retried)
        reporter = PruningCallback(trial, self.plan.report_metric) if self.plan.report_metric else None
        outcome = run_spec(spec, experiment=self.plan.name, parent_run_id=self.parent, tags=tags,
                           callbacks=[*([reporter] if reporter else []), *epoch_beats(trial.number)],
                           split=self._split(spec),
                           run_name=f"{self.plan.name} #{trial.number}", verbose=self.verbose,
                           on_start=remember_run(trial))
        trial.set_user_attr("epochs", outcome.result.epochs_run)
        if reporter is not None and reporter.pruned:
            client = MlflowClient()
            client.set_tag(outcome.run_id, "pruned", reporter.pruned)
            client.set_terminated(outcome.run_id, "KILLED")
            raise optuna.TrialPruned(reporter.pruned)
        values = self.plan.values(outcome.summary)
        if not all(np.isfinite(values)):
            # Not an AblateError: one diverged trial (a high learning rate) does not fail the others.
            raise FloatingPointError(f"trial {trial.number}: non-finite objective value(s) {values}")
        return values[0] if len(values) == 1 else values

    def _split(self, spec: Any) -> Any:
        """The data split, loaded once per worker for each data section and seed."""
        from ablate.train import load_data

        key = json.dumps([spec.data.model_dump(), spec.seed], sort_keys=True)
        if key not in self._splits:
            self._splits = {key: load_data(spec)}
        return self._splits[key]


def study_trials(seed_offset: int | None = None) -> TrialKind:
    """The study's ``TrialKind``: its objective (resolving runs that dead workers left RUNNING
    first) and its budget. ``seed_offset`` None: from ``ABLATE_WORKER_INDEX`` or the process id."""

    def objective(study: optuna.Study, verbose: int) -> StudyObjective:
        built = StudyObjective(study, verbose, seed_offset)
        reconcile(study)
        return built

    return TrialKind(KIND, objective=objective, has_work=has_budget, sampled=True)
