"""One stop policy for every long-running command: SIGTERM and SIGHUP take Ctrl-C's path.

docker stop, Kubernetes and SLURM stop a process with SIGTERM; closing its terminal sends
SIGHUP. Python's default for both ends the process on the spot, leaving MLflow runs and
Optuna trials RUNNING. Under ``stops_as_interrupt()`` each of SIGTERM, SIGINT and SIGHUP
raises ``Stopped``, a ``KeyboardInterrupt``, so the code that ends a run KILLED and fails a
trial for retry on Ctrl-C runs for all three; the CLI then exits ``exit_code(e)``: 128 + the
signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP).

Child processes stop with their parent: ``die_with_parent`` has the kernel signal a child when
its parent dies, even by SIGKILL (Linux); ``stop`` ends children politely, then firmly. Run as
a script (by path, so that neither ``ablate`` nor TensorFlow is imported) this module is a
server's keeper: ``python -I signals.py CMD...`` runs CMD in its own process group and ends the
whole group when it is stopped or its parent dies (see ``keep``).

Example:
    >>> with stops_as_interrupt():
    ...     train()  # `kill PID` ends the MLflow run KILLED, as Ctrl-C does
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
PR_SET_CHILD_SUBREAPER = 36  # prctl(2): orphaned descendants are re-parented here, so they can be reaped
KEEPER_GRACE_S = 10.0  # a server's processes get this long after SIGTERM before SIGKILL
REDELIVER_S = 0.2  # a stop that Python dropped (raised in a finalizer) is sent again after this long


class Stopped(KeyboardInterrupt):
    """A stop signal, raised in the main thread like Ctrl-C; ``signum`` says which one."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def exit_code(interrupt: BaseException) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (Ctrl-C: 130)."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


def describe(interrupt: BaseException) -> str:
    """What stopped the process, for a run's ``error`` tag and the CLI's last line."""
    if isinstance(interrupt, Stopped) and interrupt.signum != signal.SIGINT:
        return str(interrupt)
    return "interrupted by the user (Ctrl-C)"


class _RaiseOnce:
    """Raises ``Stopped`` for the first stop signal; while stopping, ignores a repeated SIGTERM or SIGHUP.

    One stop often arrives twice (SLURM signals every process of a job, then our parent terminates
    its workers; a terminal's Ctrl-C reaches the whole process group): a second raise in the middle
    of the clean-up would leave the run RUNNING it was ending. A second Ctrl-C still raises: the
    user asks to skip the wait.
    """

    def __init__(self) -> None:
        self.stopping = False
        self.holds = 0  # > 0 inside ``held()``: a stop is noted in ``pending``, raised later
        self.pending: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping and signum != signal.SIGINT:
            return
        if self.holds and not (self.pending is not None and signum == signal.SIGINT):  # Ctrl-C twice: now
            self.pending = self.pending or signum
            return
        self.stopping = True
        raise Stopped(signum)

    def dropped(self, previous: Callable[[Any], object]) -> Callable[[Any], object]:
        """A ``sys.unraisablehook`` that delivers again a ``Stopped`` that Python dropped.

        A handler runs wherever the main thread is, and that can be a ``__del__``, a weakref
        callback (SQLAlchemy's registries use them) or a garbage-collector callback. Python prints
        an exception raised there ("Exception ignored in ...") and goes on, so the stop would be
        lost, and with ``stopping`` set a repeated SIGTERM too: the process would run on. Every
        place Python drops an exception goes through this hook, so the signal is sent again
        shortly, to land in ordinary code. Other unraisable exceptions go to ``previous``.
        """
        def hook(unraisable: Any) -> None:
            if not isinstance(unraisable.exc_value, Stopped):
                previous(unraisable)
                return
            self.stopping = False
            again = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), unraisable.exc_value.signum))
            again.daemon = True
            again.start()
        return hook

    def raise_pending(self) -> None:
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self.stopping = True
            raise Stopped(signum)


@contextlib.contextmanager
def stops_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP raise ``Stopped`` (see the module docstring).

    Nested blocks keep the outer policy. Signals ignored at start (``nohup``'s SIGHUP, SIGINT of a
    background job) stay ignored. Outside the main thread Python cannot set handlers: a no-op.
    """
    if threading.current_thread() is not threading.main_thread() or any(
            isinstance(signal.getsignal(s), _RaiseOnce) for s in STOP_SIGNALS):
        yield
        return
    handler = _RaiseOnce()
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = handler.dropped(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for s, h in previous.items():
            signal.signal(s, h)


def _handler() -> _RaiseOnce | None:
    handler = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    return handler if isinstance(handler, _RaiseOnce) else None


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within the block a stop signal is noted, not raised; it is raised when the block ends, or in ``released()``.

    For code that a stop must not cut in two: Optuna's ``study.optimize`` marks a trial RUNNING
    before it calls the objective and records the objective's end after, and an interrupt between
    those steps leaves the trial RUNNING until its heartbeat goes stale. Held there, and released
    inside the objective, a stop always lands where Optuna fails the trial (``ablate.campaign.worker``).
    Outside ``stops_as_interrupt()`` (or off the main thread) a no-op.
    """
    handler = _handler()
    if handler is None:
        yield
        return
    handler.holds += 1
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        handler.holds -= 1
        if not handler.holds and not interrupted:
            handler.raise_pending()  # a stop that came while held: raised now (replaces an error in flight)


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Inside ``held()``, a block where stop signals raise at once again; one noted meanwhile raises on entry."""
    handler = _handler()
    if handler is None:
        yield
        return
    saved, handler.holds = handler.holds, 0
    try:
        handler.raise_pending()
        yield
    finally:
        handler.holds = saved


def deliver_pending() -> None:
    """Inside ``held()``: raises a stop noted meanwhile, now. The held code's safe points call it.

    ``ablate.train.fit`` holds stops during ``model.fit`` and calls this before every batch: a
    handler that raises inside TensorFlow's C code can come out as another error (a
    ``SystemError`` turned into an ``AttributeError``), but between batches it lands in Python.
    """
    handler = _handler()
    if handler is not None:
        handler.raise_pending()


def stop_in(error: BaseException) -> Stopped | None:
    """The ``Stopped`` that ``error`` was raised while handling, if any.

    A stop that lands in C code (TensorFlow calling back into Python) is wrapped by it in another
    error, with the ``Stopped`` as its cause or context: the code that ends runs KILLED and the
    CLI's exit status look for it here, so the stop still ends the run KILLED and exits 143.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, Stopped):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux; None elsewhere (or where libc cannot be loaded)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when this process dies.

    It covers what no handler can: this process killed by SIGKILL or the OOM killer. Linux only
    (None elsewhere: ``Popen(preexec_fn=None)`` is the default). ``prctl`` is looked up here,
    because between fork and exec, where the function runs, a lookup or an import may deadlock on a
    lock another thread held. The kernel signals when the *thread* that started the child ends:
    start children from the main thread.
    """
    prctl, parent = _prctl(), os.getpid()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: the kernel will not tell
            os.kill(os.getpid(), sig)

    return preexec


def stop(procs: Sequence[subprocess.Popen], grace_s: float, group: bool = False) -> None:  # type: ignore[type-arg]
    """Ends ``procs``: SIGTERM, up to ``grace_s`` seconds to exit, then SIGKILL for what is left.

    ``group=True`` signals each one's process group (a server and the workers it started; only for
    children started with ``start_new_session=True``). A Ctrl-C while waiting skips the wait.
    """
    group = group and hasattr(os, "killpg")
    _signal(procs, signal.SIGTERM, group)
    deadline = time.monotonic() + grace_s
    try:
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        _signal(procs if group else [p for p in procs if p.poll() is None], getattr(signal, "SIGKILL", 9), group)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)


def _signal(procs: Sequence[subprocess.Popen], sig: int, group: bool) -> None:  # type: ignore[type-arg]
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(p.pid, sig)
            elif p.poll() is None:
                p.send_signal(sig)


# --- the keeper: a server's first process, so that none of its processes outlives ablate --------

def keeper_command(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run under a keeper (``-I``: only the standard library, not this project, is imported)."""
    return [sys.executable, "-I", os.path.abspath(__file__), *cmd]


def keep(cmd: Sequence[str], grace_s: float = KEEPER_GRACE_S) -> int:
    """Runs ``cmd`` as its own process group until it exits or this process is stopped; returns its status.

    Then ends every process of that group. ``mlflow server`` is a CLI process that starts uvicorn,
    which starts workers: SIGTERM to the CLI alone, or the CLI's death, leaves uvicorn serving. The
    keeper is started with ``die_with_parent`` and reaps the group's orphans (a child subreaper),
    so it also knows when the group is gone.
    """
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = subprocess.Popen(list(cmd), start_new_session=True)
    status = 1
    try:
        with stops_as_interrupt():
            status = child.wait()
    except KeyboardInterrupt as e:
        status = exit_code(e)
    finally:
        _end_group(child.pid, grace_s)
    return status if status >= 0 else 128 - status  # a child killed by signal N: 128 + N, as a shell says


def _end_group(pgid: int, grace_s: float) -> None:
    """SIGTERM to the group, then SIGKILL after ``grace_s``; reaps our children meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(keep(sys.argv[1:]))
