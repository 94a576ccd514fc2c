"""A worker's heartbeat file: liveness and readiness for a platform's probes, without an HTTP server.

A batch worker serves nothing over HTTP, so it says that it is alive in a way an exec probe can
read: ``ablate worker --heartbeat-file PATH`` writes PATH once the campaign is loaded (ready), then
again before and after every trial, at the end of every epoch and at every look while it waits
for other workers' trials (alive). A worker stuck anywhere (a GPU kernel that never returns, a
hung data read) stops rewriting it; Kubernetes' liveness probe compares the file's age with a
limit and restarts the container, whose SIGTERM ends the run KILLED and queues the trial again
(``deploy/k8s/worker-job.yaml``). The file is removed when the worker stops taking trials.

The file holds one line saying what the worker did last, for ``kubectl exec POD -- cat PATH``.

Example:
    >>> with Heartbeat("/tmp/ablate/heartbeat").active():
    ...     work(study, kind)      # work() and the objectives' epoch callbacks call beat(...)
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ablate.errors import AblateError

_ACTIVE: ContextVar[Heartbeat | None] = ContextVar("ablate_heartbeat", default=None)


class Heartbeat:
    """The heartbeat file at ``path``, rewritten by ``beat`` while ``active``.

    Args:
        path: the file a probe reads (its folder is created).

    Example:
        >>> with Heartbeat("/tmp/ablate/heartbeat").active() as heartbeat:
        ...     heartbeat.beat("loaded study architecture")
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._warned = False

    def beat(self, doing: str) -> None:
        """Rewrites the file with ``doing`` (atomically: a probe never reads half a line).

        A failed write is said once on stderr and does not stop the trial: the liveness probe will.
        """
        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            scratch.write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()}: {doing}\n")
            os.replace(scratch, self.path)
        except OSError as e:
            if not self._warned:
                print(f"ablate: cannot write the heartbeat file {self.path}: {e.strerror or e}", file=sys.stderr)
                self._warned = True

    def age(self) -> float:
        """Seconds since the last beat (``FileNotFoundError`` before the first one)."""
        return time.time() - self.path.stat().st_mtime

    @contextlib.contextmanager
    def active(self) -> Iterator[Heartbeat]:
        """Within the block, ``beat()`` rewrites this file; after it, the file is gone.

        Raises:
            AblateError: the file's folder cannot be created or written (checked before any trial).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.unlink(missing_ok=True)  # a previous process's file must not say this one is ready
            probe = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise AblateError(f"--heartbeat-file {self.path}: cannot write there ({e.strerror or e}); "
                              f"give a path in a writable folder, e.g. /tmp/ablate/heartbeat.") from None
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)
            with contextlib.suppress(OSError):
                self.path.unlink()


def beat(doing: str) -> None:
    """Rewrites the active heartbeat file with ``doing``; nothing outside ``Heartbeat.active``."""
    heartbeat = _ACTIVE.get()
    if heartbeat is not None:
        heartbeat.beat(doing)


def epoch_beats(trial_number: int) -> list[Any]:
    """Keras callbacks that beat at the end of every epoch of trial ``trial_number`` (none without a heartbeat).

    For the objectives of the kinds that train (ablations, studies): ``run_spec(..., callbacks=...)``.
    """
    if _ACTIVE.get() is None:
        return []
    import keras  # only in a process that trains: the engine does not import TensorFlow otherwise

    return [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: beat(f"epoch {epoch + 1} of trial {trial_number} done"))]
