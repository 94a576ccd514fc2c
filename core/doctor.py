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

Workers call ``ablate.campaign.reconcile`` before every trial, so a killed worker's run is
ended as soon as another worker has failed its trial; the checks of one study's trials and
runs are the campaign engine's (``ablate.campaign.reconcile``), the rest are here.

Example:
    >>> for finding in diagnose(open_storage(url), MlflowClient()):
    ...     print(finding.line())
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterable

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ablate.campaign.reconcile import Finding, end_run, orphan_runs, stale_trials
from ablate.campaign.runs import running_runs

PARENT_IDLE_S = 120  # a parent run with no trial running or finished for this long is orphaned


def diagnose(storage: optuna.storages.BaseStorage, client: MlflowClient) -> list[Finding]:
    """Every inconsistency between the Optuna storage, the MLflow store and live processes."""
    running = running_runs(client)
    findings: list[Finding] = []
    for frozen in storage.get_all_studies():
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        stale = stale_trials(study, storage)
        findings += stale
        findings += orphan_runs(study, client, running, {f.trial_number for f in stale if f.trial_number is not None})
        findings += idle_parents(study, client, running)
    seen = {f.run_id for f in findings}
    findings += dead_owner_runs(client, (r for r in running if r.info.run_id not in seen))
    return findings


def idle_parents(study: optuna.Study, client: MlflowClient, running: list[Run]) -> list[Finding]:
    """The study's parent run, RUNNING although no trial has run for ``PARENT_IDLE_S`` seconds."""
    parents = [r for r in running if r.data.tags.get("optuna_study") == study.study_name
               and "optuna_trial" not in r.data.tags]  # a trial's run names its trial
    if not parents:
        return []
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):
        return []
    last = max([t.datetime_complete.timestamp() for t in trials if t.datetime_complete] or [0.0])
    last = max(last, *(r.info.start_time / 1000 for r in parents))
    if time.time() - last < PARENT_IDLE_S:
        return []
    return [end_run(client, r, f"RUNNING but no trial has run for {int(time.time() - last)} s", "KILLED",
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
        findings.append(end_run(client, run, f"RUNNING but its process {pid} on this machine is gone", "KILLED"))
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
