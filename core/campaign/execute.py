"""Running a campaign's trials: in this process, or in N ``ablate worker`` processes on this machine.

``run_round`` runs the trials of one round until none is waiting or running: worker processes
first (when asked for), then whatever lost workers left, in this process. ``resumable`` wraps
a whole campaign: Ctrl-C ends the parent run KILLED and says how to resume; an error ends it
FAILED.

Example:
    >>> launch = Launch("sqlite:///mlruns/optuna.db", workers=2)
    >>> with resumable(study, kept=lambda: "3 runs kept"):
    ...     run_round(study, ARMS, round_, launch)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import optuna

from ablate.campaign import failfast
from ablate.campaign.kinds import Round, TrialKind
from ablate.campaign.parent import end_parent, note_failure
from ablate.campaign.progress import Progress
from ablate.campaign.reconcile import reconcile
from ablate.campaign.worker import POLL_S, work
from ablate.errors import AblateError
from ablate.signals import die_with_parent, stop

WORKER_COMMAND = (sys.executable, "-m", "ablate.cli", "worker")  # `ablate worker`
STOP_WAIT_S = 120  # a terminated worker ends its run KILLED and delivers its backlog first


@dataclass(frozen=True)
class Launch:
    """Where a campaign's trials run.

    Args:
        storage_url: the Optuna storage every worker opens.
        workers: 1 runs trials in this process; N > 1 starts N worker processes on this machine.
        tracking_uri: passed to worker processes (None: they resolve it as this process did).
        verbose: Keras output of trials run in this process (worker processes are quiet).
        command: a worker process's command line, before ``--study NAME --storage URL``.

    Example:
        >>> Launch("sqlite:///mlruns/optuna.db", workers=4, tracking_uri="http://127.0.0.1:5000")
    """

    storage_url: str
    workers: int = 1
    tracking_uri: str | None = None
    verbose: int = 0
    command: Sequence[str] = WORKER_COMMAND

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"Launch: workers must be >= 1, got {self.workers}.")


def run_round(study: optuna.Study, kind: TrialKind, round_: Round, launch: Launch) -> None:
    """Runs the round's trials (worker processes, then leftovers inline) and reconciles.

    Raises ``TrialsFailed`` when trials fail for a reason that fails every trial (``failfast``).
    """
    failfast.clear_stop(study)  # a new invocation: the cause of an earlier stop may be fixed
    if launch.workers > 1:
        run_workers(study, round_, launch)
        failfast.raise_if_stopped(study)  # a worker found that every trial fails: no leftovers run here
    c = round_.counts(study)
    if launch.workers == 1 or c.waiting or c.running:  # the leftovers of lost workers run here
        run_inline(study, kind, round_, launch.verbose)
    reconcile(study)


def run_inline(study: optuna.Study, kind: TrialKind, round_: Round, verbose: int = 0) -> int:
    """Trials in this process until none is left to run; returns how many ran."""
    with Progress(study, round_) as progress:
        return work(study, kind, verbose=verbose, on_trial=progress.on_trial)


def run_workers(study: optuna.Study, round_: Round, launch: Launch) -> None:
    """Starts ``launch.workers`` worker processes on the queue and follows them until they exit."""
    cmd = [*launch.command, "--study", study.study_name, "--storage", launch.storage_url, "--quiet"]
    if launch.tracking_uri:
        cmd += ["--tracking-uri", launch.tracking_uri]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(launch.workers):  # one by one: a failed start stops those already started
            procs.append(_start_worker(cmd, i, launch.workers))
        with Progress(study, round_) as progress:
            while any(p.poll() is None for p in procs):
                time.sleep(POLL_S)
                progress.refresh()
            progress.refresh()
    except BaseException:  # Ctrl-C, SIGTERM or an error here: no worker outlives the command
        stop(procs, STOP_WAIT_S)  # SIGTERM: a worker ends its current run KILLED; SIGKILL after the wait
        raise


def _start_worker(cmd: list[str], index: int, workers: int) -> subprocess.Popen[bytes]:
    """Starts worker ``index``; a command that cannot start is an AblateError naming it."""
    try:
        # A worker gets SIGTERM if this process dies, even by SIGKILL: it ends its run KILLED, its trial is retried.
        return subprocess.Popen(cmd, env=worker_env(index, workers), preexec_fn=die_with_parent())  # noqa: PLW1509
    except (OSError, subprocess.SubprocessError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise AblateError(f"cannot start worker process {index + 1} of {workers} ({' '.join(cmd[:3])[:120]}): "
                          f"{reason}; the workers already started were stopped. Check the worker command and "
                          f"the installation, or run with --workers 1.") from e


def worker_env(index: int, workers: int) -> dict[str, str]:
    """The environment of worker ``index`` of ``workers`` started on this machine.

    Its index (``ABLATE_WORKER_INDEX``: a study's seed offset) and, unless already set, an equal
    share of the CPU cores for TensorFlow's op threads (processes that each use every core mostly contend).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, "ABLATE_WORKER_INDEX": str(index)}
    env.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, cores // workers)))
    return env


@contextlib.contextmanager
def resumable(study: optuna.Study, kept: Callable[[], str],
              end: Callable[[str], object] | None = None) -> Iterator[None]:
    """Ends the parent run KILLED on Ctrl-C or SIGTERM / SIGHUP (``ablate.signals``; saying ``kept()`` and how
    to resume), FAILED on an error.

    ``end(status)`` ends the parent (default: ``end_parent(study, status)``); the exception is
    raised again either way.
    """
    end = end or partial(end_parent, study)
    try:
        yield
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            reconcile(study)
        end("KILLED")
        print(f"interrupted: run the same command again to resume ({kept()})")
        raise
    except Exception as e:
        with contextlib.suppress(Exception):
            note_failure(study, e)  # why, on the parent run (tag ablate.failure and its description)
        with contextlib.suppress(Exception):
            end("FAILED")
        raise
