"""``ablate doctor``: find (and with ``--repair`` fix) what crashes leave behind.

A worker killed with SIGKILL, a machine that lost power or a tracking server that went away
can leave

- Optuna trials RUNNING whose worker no longer beats (repair: fail them; the heartbeat
  callback queues a retry);
- MLflow runs RUNNING whose trial is over (repair: end them KILLED, or FINISHED if the trial
  completed);
- MLflow runs RUNNING whose process on this machine is gone (repair: end them KILLED);
- ablation or study parent runs RUNNING with no trial running for a while (repair: KILLED;
  running the ablation again resumes it).

Workers call ``reconcile(study)`` after every trial, so a killed worker's run is ended as
soon as another worker has failed its trial.

Example:
    >>> for finding in diagnose(open_storage(url), MlflowClient()):
    ...     print(finding.line())
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

PARENT_IDLE_S = 120  # a parent run with no trial running or finished for this long is orphaned
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


def diagnose(storage: optuna.storages.BaseStorage, client: MlflowClient) -> list[Finding]:
    """Every inconsistency between the Optuna storage, the MLflow store and live processes."""
    running = running_runs(client)
    findings: list[Finding] = []
    for frozen in storage.get_all_studies():
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        stale = stale_trials(study, storage)
        findings += stale
        findings += orphan_runs(study, client, running, {f.trial_number for f in stale})
        findings += idle_parents(study, client, running)
    seen = {f.run_id for f in findings}
    findings += dead_owner_runs(client, (r for r in running if r.info.run_id not in seen))
    return findings


def reconcile(study: optuna.Study, client: MlflowClient | None = None) -> int:
    """Ends the MLflow runs of ``study`` whose trial is no longer RUNNING; returns how many."""
    findings = orphan_runs(study, client or MlflowClient())
    for finding in findings:
        finding.repair()
    return len(findings)


def running_runs(client: MlflowClient) -> list[Run]:
    """Every MLflow run whose status is RUNNING, in every experiment."""
    ids = [e.experiment_id for e in client.search_experiments()]
    runs: list[Run] = []
    for i in range(0, len(ids), 100):
        token = None
        while True:
            page = client.search_runs(ids[i:i + 100], "attributes.status = 'RUNNING'", max_results=1000,
                                      page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    return runs


def stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[Finding]:
    """RUNNING trials whose worker stopped beating for longer than the grace period."""
    get_stale = getattr(storage, "_get_stale_trial_ids", None)
    if get_stale is None or not getattr(storage, "get_heartbeat_interval", lambda: None)():
        return []  # a storage without heartbeats: liveness cannot be told
    stale = set(get_stale(storage.get_study_id_from_name(study.study_name)))
    return [Finding(f"trial {t.number} of {study.study_name}", "RUNNING but its worker stopped beating",
                    "fail it (a retry is queued)", lambda: fail_stale(study), trial_number=t.number)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t._trial_id in stale]


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def orphan_runs(study: optuna.Study, client: MlflowClient, running: list[Run] | None = None,
                stale: Iterable[int] = ()) -> list[Finding]:
    """RUNNING child runs of ``study`` whose trial has ended, is ``stale``, or never reached the storage."""
    running = running_runs(client) if running is None else running
    stale_numbers = set(stale)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    by_run_id = {t.user_attrs.get("mlflow_run_id"): t for t in trials.values() if t.user_attrs.get("mlflow_run_id")}
    findings = []
    for run in running:
        trial = _trial_of(run, study.study_name, trials, by_run_id)
        if trial is False or (trial is not None and trial.state == TrialState.RUNNING
                              and trial.number not in stale_numbers):
            continue  # not a child run of this study, or its trial is still going
        state = ("stale" if trial.number in stale_numbers else trial.state.name) if trial is not None else "missing"
        status = _FINAL_STATUS.get(trial.state, "KILLED") if trial is not None else "KILLED"
        findings.append(_end_finding(client, run, f"RUNNING but its trial is {state}", status))
    return findings


def _trial_of(run: Run, study_name: str, trials: dict[int, FrozenTrial],
              by_run_id: dict[str, FrozenTrial]) -> FrozenTrial | None | bool:
    """The trial that started ``run``; None if it is gone; False if ``run`` is not a child of the study."""
    tags = run.data.tags
    number = tags.get("optuna_trial")
    if tags.get("optuna_study") == study_name and number is not None and number.isdigit():
        return trials.get(int(number))  # the tag names the trial that started the run, even after a retry
    return by_run_id.get(run.info.run_id, False)


def idle_parents(study: optuna.Study, client: MlflowClient, running: list[Run]) -> list[Finding]:
    """The study's parent run, RUNNING although no trial has run for ``PARENT_IDLE_S`` seconds."""
    parents = [r for r in running if r.data.tags.get("optuna_study") == study.study_name
               and "optuna_trial" not in r.data.tags and r.data.tags.get("ablate.kind") in ("ablation", "study")]
    if not parents:
        return []
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):
        return []
    last = max([t.datetime_complete.timestamp() for t in trials if t.datetime_complete] or [0.0])
    last = max(last, *(r.info.start_time / 1000 for r in parents))
    if time.time() - last < PARENT_IDLE_S:
        return []
    return [_end_finding(client, r, f"RUNNING but no trial has run for {int(time.time() - last)} s", "KILLED",
                         "; running it again resumes it") for r in parents]


def dead_owner_runs(client: MlflowClient, running: Iterable[Run]) -> list[Finding]:
    """RUNNING runs started on this machine by a process that no longer exists."""
    host = platform.node()
    findings = []
    for run in running:
        tags = run.data.tags
        pid = tags.get("ablate.pid", "")
        if tags.get("ablate.host") != host or not pid.isdigit() or _alive(int(pid), run.info.start_time / 1000):
            continue
        findings.append(_end_finding(client, run, f"RUNNING but its process {pid} on this machine is gone", "KILLED"))
    return findings


def _alive(pid: int, since: float) -> bool:
    """True if process ``pid`` exists and is not a newer process that reused the number."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, ValueError, IndexError):
        ticks = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK") <= since + 5
    return True


def _end_finding(client: MlflowClient, run: Run, problem: str, status: str, note: str = "") -> Finding:
    run_id = run.info.run_id

    def repair() -> None:
        client.set_tag(run_id, "ablate.repaired", f"{problem}; ended {status} by ablate doctor")
        client.set_terminated(run_id, status)

    name = run.info.run_name or run.data.tags.get("mlflow.runName", "")
    return Finding(f"run {run_id} ({name})", problem, f"end it {status}{note}", repair, run_id)
