"""A worker: take trials of one campaign until none are left (``ablate worker``, or inline).

Any number of workers, on any machine that reaches the storage and the tracking server, can
share one queue. A killed worker's trial is failed by the heartbeat and queued again; a worker
stopped by SIGTERM or SIGHUP (a pod evicted, a container stopped) fails its trial and queues its
retry itself, at once. A worker that finds none left but sees other workers' trials RUNNING
waits rather than exits, so that it takes the retry of one that was lost; when nothing is left
to run or running, it returns (``ablate worker`` exits 0, so a Kubernetes Job completes).

Example:
    >>> ran = work_on("ablation.skips", "sqlite:///mlruns/optuna.db", kinds=[ARMS, study_trials()])
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate import adapters
from ablate.campaign.failfast import Watch, filtering_optuna_logs, one_line_per_failure, raise_if_stopped, stop
from ablate.campaign.kinds import Objective, TrialKind
from ablate.campaign.liveness import Heartbeat, beat
from ablate.campaign.queue import kind_of
from ablate.campaign.reconcile import tidy
from ablate.errors import AblateError
from ablate.signals import Stopped, held, released, stop_in, stops_as_interrupt
from ablate.storage import HEARTBEAT_S, MAX_RETRY, load_study, open_storage

OnTrial = Callable[[optuna.Study, FrozenTrial], None]
EMPTY = "empty"  # trial user attribute: started when nothing was queued, pruned at once
POLL_S = min(HEARTBEAT_S, 3)  # how often a worker with nothing to take looks again


def select_kind(study: optuna.Study, kinds: Sequence[TrialKind]) -> TrialKind:
    """The kind among ``kinds`` named by the study's ``ablate.kind`` attribute."""
    name = kind_of(study)
    for kind in kinds:
        if kind.name == name:
            return kind
    if name is None:
        raise AblateError(f"Study '{study.study_name}' was not created by ablate (no ablate.kind attribute).")
    known = ", ".join(k.name for k in kinds)
    raise AblateError(f"Study '{study.study_name}' holds trials of kind '{name}'; this worker runs only: {known}.")


def work_on(study_name: str, storage_url: str | None, kinds: Sequence[TrialKind], max_trials: int | None = None,
            verbose: int = 0, heartbeat_file: str | None = None) -> int:
    """Loads the study ``study_name`` and works on it (what ``ablate worker`` runs); returns how many trials ran.

    ``heartbeat_file``: a file rewritten while the worker makes progress, for a platform's liveness
    and readiness probes (``ablate.campaign.liveness``).
    """
    with Heartbeat(heartbeat_file).active() if heartbeat_file else contextlib.nullcontext():
        study = load_study(study_name, open_storage(storage_url))
        return work(study, select_kind(study, kinds), max_trials=max_trials, verbose=verbose)


def work(study: optuna.Study, kind: TrialKind, max_trials: int | None = None, verbose: int = 0,
         on_trial: OnTrial | None = None) -> int:
    """Runs trials until ``kind`` has no work and none is running (or ``max_trials``); returns how many ran.

    SIGTERM and SIGHUP (docker stop, a terminated worker process) end the current trial's run KILLED
    and fail the trial for retry, like Ctrl-C (``ablate.signals``; also when not started by the CLI).
    Raises ``TrialsFailed`` once trials fail for a reason that fails every trial, or another
    worker of the queue found one (``ablate.campaign.failfast``).
    """
    watch = Watch(kind.objective(study, verbose), echo=on_trial is None)  # fail fast: ablate.campaign.failfast
    started: list[int] = []  # numbers of the trials this worker started
    objective = _noting_start(watch if kind.sampled else _queued_only(watch), started)
    ran = 0
    with stops_as_interrupt(), _quiet_interrupts(), one_line_per_failure():
        beat(f"working on {study.study_name}")  # ready: the campaign is loaded
        while max_trials is None or ran < max_trials:
            raise_if_stopped(study)  # another worker found that every trial fails
            tidy(study)
            if kind.has_work(study):
                try:
                    with held():  # a stop lands inside the objective (released there), where Optuna fails the trial
                        study.optimize(objective, n_trials=1, catch=(Exception,),
                                       callbacks=[on_trial] if on_trial is not None else None)
                except Stopped as e:
                    if e.signum != signal.SIGINT and started:  # stopped by the platform, not by the user
                        retry_interrupted(study, started[-1])
                    raise
                ran += 1
                beat(f"trial {started[-1] if started else '?'} of {study.study_name} ended")
                if (failure := watch.verdict()) is not None:
                    tidy(study)
                    stop(study, failure)
            elif study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                beat(f"waiting for other workers' trials of {study.study_name}")
                time.sleep(POLL_S)  # another worker's trial: wait for it to end or turn stale
            else:
                break
        tidy(study)
    return ran


def retry_interrupted(study: optuna.Study, number: int) -> bool:
    """Queues a retry of trial ``number`` if a stop failed it, as the heartbeat does for a lost trial.

    SIGTERM and SIGHUP come from the platform (a pod evicted or scaled away, a container
    stopped): the campaign goes on, and another worker takes the retry at once instead of after
    a new invocation. Ctrl-C is the user stopping the campaign: its trial is only failed, and
    running the command again queues it. Returns whether a retry was queued.
    """
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.FAIL:
        return False
    return adapters.queue_retry(study, trial, MAX_RETRY)


def _noting_start(objective: Objective, started: list[int]) -> Objective:
    """``objective``, appending each trial's number to ``started`` and beating as it starts."""

    def run(trial: optuna.Trial) -> float | Sequence[float]:
        started.append(trial.number)
        with released():  # a stop noted while Optuna started the trial raises here: the trial fails, not hangs
            beat(f"trial {trial.number} of {trial.study.study_name} started")
            try:
                return objective(trial)
            except Exception as e:
                if (stop := stop_in(e)) is not None:  # a stop wrapped by C code: not a failed trial to go on from
                    raise stop from None
                raise

    return run


def _queued_only(objective: Objective) -> Objective:
    """Prunes a trial that found the queue empty (another worker took the last trial meanwhile)."""

    def run(trial: optuna.Trial) -> float | Sequence[float]:
        if not trial.user_attrs:  # a queued trial carries the user attributes it was queued with
            trial.set_user_attr(EMPTY, True)
            raise optuna.TrialPruned("no queued trial left")
        return objective(trial)

    return run


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C with its traceback; one line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is KeyboardInterrupt:
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def _quiet_interrupts() -> Iterator[None]:
    with filtering_optuna_logs(_NoInterruptTraceback()):
        yield
