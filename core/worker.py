"""``ablate worker``: take queued trials of one ablation or study until none are left.

Any number of workers, on any machine that reaches the storage and the tracking server,
can share one queue. A killed worker's trial is failed by the heartbeat and re-queued.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.trial import TrialState

from core.errors import AblateError
from core.storage import HEARTBEAT_S, load_study, open_storage


def objective_for(study: optuna.Study, verbose: int = 0) -> Callable[[optuna.Trial], float]:
    kind = study.user_attrs.get("ablate.kind")
    if kind == "ablation":
        from core.ablation.runner import ArmObjective

        return ArmObjective(study, verbose)
    if kind == "study":
        from core.study.runner import objective_for_study

        return objective_for_study(study, verbose)
    raise AblateError(f"Study '{study.study_name}' was not created by ablate (no ablate.kind attribute).")


def has_work(study: optuna.Study) -> bool:
    if study.user_attrs.get("ablate.kind") == "study":
        from core.study.runner import has_budget

        return has_budget(study)
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def work(study_name: str, storage_url: str | None = None, max_trials: int | None = None, verbose: int = 0,
         on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> int:
    """Runs trials until the queue is empty (or ``max_trials``); returns how many ran.

    While other workers' trials are still RUNNING this worker waits rather than exits: if one
    of them was killed, its trial turns stale, is re-queued, and is taken here. SIGTERM (docker
    stop) ends the current run KILLED, like Ctrl-C.
    """
    storage = open_storage(storage_url)
    study = load_study(study_name, storage)
    objective = objective_for(study, verbose)
    ran = 0
    with _sigterm_as_interrupt(), _quiet_interrupts():
        while max_trials is None or ran < max_trials:
            _tidy(study)
            if has_work(study):
                study.optimize(objective, n_trials=1, catch=(Exception,),
                               callbacks=[on_trial] if on_trial is not None else None)
                ran += 1
            elif study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(min(HEARTBEAT_S, 3))  # another worker's trial: wait for it to end or turn stale
            else:
                break
        _tidy(study)
    return ran


def _tidy(study: optuna.Study) -> None:
    """Fails stale trials (queuing their retries) and ends the MLflow runs of trials that are over."""
    from core.doctor import fail_stale, reconcile

    fail_stale(study)
    with contextlib.suppress(Exception):  # tracking trouble must not stop the queue
        reconcile(study)


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C with its traceback; one line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is KeyboardInterrupt:
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def _quiet_interrupts() -> Iterator[None]:
    handlers, quiet = logging.getLogger("optuna").handlers, _NoInterruptTraceback()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
