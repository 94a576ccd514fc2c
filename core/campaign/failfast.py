"""Stopping a campaign early when its trials fail for a reason that will fail every trial.

A bad data file, a spec that does not build, a missing module, memory exhausted: every trial
after the first would fail the same way, each after its own start-up cost, and the campaign
would end with an empty report. ``Watch`` wraps a kind's objective, records why each trial
failed (trial user attributes ``ablate.error``, one line, and ``ablate.traceback``) and decides
to stop: at once for an error of a ``FATAL`` class, or when the first ``SAME_K`` trials a
worker ran all failed with the same class and message. The decision is kept on the study
(user attribute ``ablate.stopped``), so that every worker of the queue, in any process, stops
before its next trial, and the process that runs the campaign ends its parent run FAILED with
the reason (``ablate.failure`` tag and the run's description) and exits with one line.

Example:
    >>> watch = Watch(objective)
    >>> study.optimize(watch, n_trials=1, catch=(Exception,))
    >>> if (failure := watch.verdict()) is not None:
    ...     stop(study, failure)            # raises TrialsFailed
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import optuna

from ablate.adapters import OPTIMIZE_LOGGER
from ablate.campaign.kinds import Objective
from ablate.errors import AblateError

# Errors that no other trial escapes: bad input (data, spec), a broken install, no memory.
FATAL: tuple[type[BaseException], ...] = (AblateError, ImportError, MemoryError)
SAME_K = 2  # the first K trials failing alike (class and message) stop the campaign
ERROR = "ablate.error"  # trial user attribute: "DataError: ..." (one line)
TRACEBACK = "ablate.traceback"  # trial user attribute: the traceback's last lines
STOPPED = "ablate.stopped"  # study user attribute: why the campaign stopped (None while it may run)
REASON_MAX = 200  # characters of an error message quoted in one line
TRACEBACK_MAX = 4000  # characters of a traceback kept on the trial (the dashboard shows it)


class TrialsFailed(AblateError):
    """A campaign stopped early: its trials fail for a reason that will fail every trial."""


@dataclass(frozen=True)
class Failure:
    """Why a trial failed, and whether that stops the campaign."""

    number: int
    label: str  # "trial 3" or the trial's ``label`` user attribute ("arm baseline, seed 0")
    error: str  # "DataError: ..." (one line)
    fatal: bool


def error_line(err: BaseException) -> str:
    """``ClassName: first line of the message``, at most ``REASON_MAX`` characters."""
    first = (str(err).strip().splitlines() or [""])[0]
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= REASON_MAX else text[:REASON_MAX - 3] + "..."


class Watch:
    """An objective that records each failure on its trial and tells when to stop.

    Args:
        objective: the kind's objective.
        echo: print one line per failed trial on stderr (a worker process; trials run in the
            campaign's own process are reported by its progress lines instead).
        same_k: how many first trials failing alike stop the campaign.
    """

    def __init__(self, objective: Objective, echo: bool = False, same_k: int = SAME_K) -> None:
        self.objective = objective
        self.echo = echo
        self.same_k = same_k
        self.outcomes: list[tuple[str, str] | None] = []  # per trial run: None, or (class, message)
        self.last: Failure | None = None

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        try:
            value = self.objective(trial)
        except optuna.TrialPruned:
            raise  # not a failure, and not a trial that counts towards the first K
        except Exception as err:
            self._record(trial, err)
            raise
        self.outcomes.append(None)
        return value

    def _record(self, trial: optuna.Trial, err: Exception) -> None:
        line = error_line(err)
        with contextlib.suppress(Exception):  # a storage hiccup must not hide the trial's own error
            trial.set_user_attr(ERROR, line)
            trial.set_user_attr(TRACEBACK, traceback.format_exc()[-TRACEBACK_MAX:])
        self.outcomes.append((type(err).__name__, str(err)))
        label = str(trial.user_attrs.get("label") or f"trial {trial.number}")
        self.last = Failure(trial.number, label, line, isinstance(err, FATAL))

    def verdict(self) -> Failure | None:
        """After a trial: the failure that stops the campaign, if the trial's does; else None.

        With ``echo``, a failure that does not stop the campaign is one line on stderr here (one
        that does is said once, by the error that stops the worker).
        """
        last, self.last = self.last, None  # said once (a trial pruned before the objective ran leaves none)
        if last is None:
            return None
        first = self.outcomes[:self.same_k]
        alike = len(first) == self.same_k and first[0] is not None and all(o == first[0] for o in first)
        if last.fatal or (alike and len(self.outcomes) == self.same_k):
            return last
        if self.echo:
            print(f"ablate: {last.label} failed: {last.error}", file=sys.stderr)
        return None


def stop(study: optuna.Study, failure: Failure) -> None:
    """Records the stop on the study (every worker stops before its next trial) and raises it."""
    why = ("an error of this kind fails every trial" if failure.fatal
           else f"the first {SAME_K} trials failed the same way")
    reason = f"{failure.label} failed with {failure.error.rstrip('.')} ({why})"
    study.set_user_attr(STOPPED, reason)
    raise TrialsFailed(_message(study, reason))


def raise_if_stopped(study: optuna.Study) -> None:
    """Raises ``TrialsFailed`` if a worker of this queue stopped the campaign."""
    reason = study.user_attrs.get(STOPPED)
    if reason:
        raise TrialsFailed(_message(study, str(reason)))


def clear_stop(study: optuna.Study) -> None:
    """Lets a campaign run again (a new invocation, after the cause was fixed)."""
    if study.user_attrs.get(STOPPED):
        study.set_user_attr(STOPPED, None)


def _message(study: optuna.Study, reason: str) -> str:
    return (f"stopped '{study.study_name}': {reason}; the remaining trials were not run. Fix the cause and run "
            f"the same command again to resume.")


class _NoOptunaFailureLines(logging.Filter):
    """Optuna says a failed trial in two warnings and a traceback; ``Watch`` says it in one line.

    An interrupted trial's warning is left to the worker's own filter (it says why the run stopped).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != OPTIMIZE_LOGGER or record.levelno != logging.WARNING:
            return True
        return bool(record.exc_info and record.exc_info[0] is KeyboardInterrupt)


@contextlib.contextmanager
def one_line_per_failure() -> Iterator[None]:
    """Within the block, Optuna's failed-trial warnings (and their tracebacks) are not printed.

    The traceback is kept on the trial (``ablate.traceback``) and, for a failure inside the
    trial's MLflow run, in that run's ``error.txt``.
    """
    with filtering_optuna_logs(_NoOptunaFailureLines()):
        yield


@contextlib.contextmanager
def filtering_optuna_logs(quiet: logging.Filter) -> Iterator[None]:
    """Adds ``quiet`` to every handler of Optuna's logger for the block, and removes it after."""
    handlers = logging.getLogger("optuna").handlers
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
