"""Runs that survive a flaky tracking server or database: ordered background delivery and retries.

Everything a run logs (metrics, mask images, artifacts, tags) goes through one ``Delivery`` per
run: a FIFO queue drained by a background thread. When the tracking server is unreachable the
thread retries the head of the queue with backoff while training goes on; when the server is
back it delivers the backlog in the original order. Each item is idempotent, so a retry after
a lost response duplicates nothing: metrics carry the timestamp taken when they were logged
(MLflow ignores an identical metric row), and images and artifacts have fixed file names.

``ReconnectingRDBStorage`` does the same for the Optuna database: a call that fails because the
connection was lost (server restart, failover) is retried until the database is back.

Example:
    >>> delivery = Delivery(run_id)
    >>> delivery.log_metrics({"loss": 0.5}, step=0)   # returns at once
    >>> delivery.close()                               # waits until everything is delivered
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from optuna.storages import RDBStorage

from ablate import adapters
from ablate.errors import AblateError

T = TypeVar("T")

# Settings read from the environment, each with why it has this default.
DELIVERY_TIMEOUT_S = float(os.environ.get("ABLATE_DELIVERY_TIMEOUT_S", "1800"))  # an outage a person can fix
INTERRUPT_FLUSH_S = 30.0  # after Ctrl-C, wait this long for the backlog before ending the run
RECONNECT_S = float(os.environ.get("ABLATE_RECONNECT_S", "300"))  # a database restart or failover
MAX_BACKOFF_S = 8.0  # a recovered server is noticed within this many seconds

# MLflow's own HTTP retries (7 retries, backoff factor 2, 120 s timeout) would keep one request
# busy for minutes; ablate retries whole items itself, so each MLflow call should fail fast.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}

_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/\s:@]+):[^@\s]+@")


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def configure_http_retries() -> None:
    """Makes MLflow's HTTP calls fail fast (unless the user set these variables)."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_transient(exc: BaseException) -> bool:
    """True for errors that another attempt may not meet: connection loss, timeouts, 5xx, 429."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException):
        return _transient_status(exc.get_http_status_code())
    if isinstance(exc, MlflowException):  # connection errors and timeouts arrive as INTERNAL_ERROR
        return exc.error_code in _TRANSIENT_CODES
    if isinstance(exc, requests.HTTPError) and exc.response is not None:  # artifact uploads
        return _transient_status(exc.response.status_code)
    if isinstance(exc, (TypeError, ValueError, KeyError, FileNotFoundError)):
        return False  # a bug in what we log, not the server
    return True  # connection refused/reset and other network errors


_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


def _transient_status(status: int) -> bool:
    return status == 429 or status >= 500


def _backoff(attempt: int) -> float:
    return min(MAX_BACKOFF_S, 0.5 * 2**attempt)


def retry(fn: Callable[[], T], what: str, deadline_s: float = RECONNECT_S) -> T:
    """Calls ``fn`` until it succeeds, retrying transient errors for up to ``deadline_s`` seconds."""
    start, attempt = time.monotonic(), 0
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_transient(e) or time.monotonic() - start > deadline_s:
                raise
            if attempt == 0:
                _say(f"could not {what} ({_first_line(e)}); retrying for up to {deadline_s:.0f} s")
            time.sleep(_backoff(attempt))
            attempt += 1


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return redact_text(f"{type(e).__name__}: {text[0] if text else ''}")[:220]


def _say(message: str) -> None:
    print(f"ablate: {message}", file=sys.stderr, flush=True)


# --- ordered background delivery to MLflow ------------------------------------------------

@dataclass
class _Item:
    what: str  # for messages: "metrics step 3", "image masks step 2", ...
    send: Callable[[], None]


class DeliveryError(AblateError):
    """Items of a run could not be delivered before the timeout."""


class Delivery:
    """Delivers one run's metrics, images and artifacts in order, from a background thread.

    The ``log_*`` methods return at once (files are copied to a spool folder first, so the
    caller may delete its own). ``close()`` waits until everything is delivered.

    Args:
        run_id: the MLflow run that receives everything.
        client: an ``MlflowClient`` (default: one for the current tracking URI).

    Example:
        >>> d = Delivery(run.info.run_id)
        >>> d.log_image(grid, key="masks", step=0)
        >>> d.close()
    """

    def __init__(self, run_id: str, client: Any = None) -> None:
        from mlflow.tracking import MlflowClient

        configure_http_retries()
        self.run_id = run_id
        self.client = client or MlflowClient()
        self.spool = Path(tempfile.mkdtemp(prefix="ablate-delivery-"))
        self.dropped: list[str] = []  # items refused by the server for good (not retried)
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._outage_since: float | None = None
        self._image_tag_sent = False
        self._thread = threading.Thread(target=self._drain, name=f"ablate-delivery-{run_id[:8]}", daemon=True)
        self._thread.start()

    # -- what callers log ----------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)  # fixed now: a re-sent batch is recognised as the same rows
        rows = [Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items()]
        if rows:
            self._put(f"metrics step {step}", lambda: self.client.log_batch(self.run_id, metrics=rows))

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        rows = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(rows), 100):  # MLflow's limit per batch
            chunk = rows[i:i + 100]
            self._put("params", lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        rows = [RunTag(k, str(v)) for k, v in tags.items()]
        if rows:
            self._put("tags", lambda: self.client.log_batch(self.run_id, tags=rows))

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copies ``local_path`` now and uploads the copy under ``artifact_path`` later."""
        src = Path(local_path)
        folder = self._slot()
        shutil.copy2(src, folder / src.name)
        self._put(f"artifact {src.name}",
                  lambda: self.client.log_artifact(self.run_id, str(folder / src.name), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        path = self._slot() / Path(artifact_file).name
        path.write_text(text)
        self._upload(path, artifact_file)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Renders ``fig`` now (a pyplot figure: matplotlib's global state is not thread-safe), or,
        given a function that makes a ``matplotlib.figure.Figure``, on the delivery thread."""
        path = self._slot() / Path(artifact_file).name
        parent = str(Path(artifact_file).parent)
        if not callable(fig):
            fig.savefig(path)
            self._upload(path, artifact_file)
            return

        def send() -> None:
            if not path.exists():
                fig().savefig(path)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

        self._put(f"artifact {artifact_file}", send)

    def log_image(self, image: np.ndarray | Callable[[], np.ndarray], key: str, step: int) -> None:
        """A step of an image series (MLflow's image grid), under the file names MLflow uses.

        ``image`` may be a function that renders it: rendering and encoding then happen on the
        delivery thread, so the training loop only pays for queueing it.
        """
        folder = self._slot()
        files: list[str] = []

        def send() -> None:
            if not files:  # rendered once, even if the upload is retried
                files.extend(adapters.image_files(image() if callable(image) else image, key, step, folder))
            for name in files:
                self.client.log_artifact(self.run_id, str(folder / name), "images")

        self._put(f"image {key} step {step}", send)
        if not self._image_tag_sent:  # the tag that makes the UI show the image grid
            self._image_tag_sent = True
            self.set_tags({adapters.LOGGED_IMAGES_TAG: "true"})

    # -- waiting and ending --------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def flush(self, timeout: float = DELIVERY_TIMEOUT_S) -> bool:
        """Waits until every queued item is delivered; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(min(left, 1.0))
        return True

    def close(self, timeout: float = DELIVERY_TIMEOUT_S) -> None:
        """Delivers the backlog, stops the thread and removes the spool folder.

        Raises:
            DeliveryError: the server did not take the backlog within ``timeout`` seconds.
        """
        delivered = self.flush(timeout)
        self._queue.put(None)
        if delivered:
            self._thread.join(timeout=5)
            shutil.rmtree(self.spool, ignore_errors=True)
            return
        raise DeliveryError(f"{self.pending} item(s) of run {self.run_id} were not delivered within "
                            f"{timeout:.0f} s: the tracking server is still unreachable (ABLATE_DELIVERY_TIMEOUT_S "
                            f"sets the wait). The run stays RUNNING; `ablate doctor --repair` ends it.")

    # -- the background thread -----------------------------------------------------------

    def _slot(self) -> Path:
        folder = self.spool / uuid.uuid4().hex[:12]
        folder.mkdir()
        return folder

    def _upload(self, path: Path, artifact_file: str) -> None:
        parent = str(Path(artifact_file).parent)
        self._put(f"artifact {artifact_file}", lambda: self.client.log_artifact(
            self.run_id, str(path), None if parent == "." else parent))

    def _put(self, what: str, send: Callable[[], None]) -> None:
        self._queue.put(_Item(what, send))

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            try:
                self._deliver(item)
            finally:
                self._queue.task_done()

    def _deliver(self, item: _Item) -> None:
        attempt = 0
        while True:
            try:
                item.send()
            except Exception as e:  # noqa: BLE001 - classified below; the thread must not die
                if not is_transient(e):
                    self.dropped.append(item.what)
                    _say(f"the tracking server refused {item.what} of run {self.run_id}: {_first_line(e)}")
                    return
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    _say(f"tracking server unavailable ({_first_line(e)}); training goes on, metrics and "
                         f"images are kept and will be delivered in order when it is back")
                time.sleep(_backoff(attempt))
                attempt += 1
                continue
            if self._outage_since is not None:
                _say(f"tracking server back after {time.monotonic() - self._outage_since:.0f} s; "
                     f"delivering {self.pending} buffered item(s)")
                self._outage_since = None
            return


_CURRENT: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("ablate_delivery", default=None)


def current() -> Delivery | None:
    """The delivery of the run being trained in this context (None outside a tracked run)."""
    return _CURRENT.get()


@contextlib.contextmanager
def delivering(delivery: Delivery) -> Iterator[Delivery]:
    """Makes ``delivery`` the one that ``current()`` returns inside the block."""
    token = _CURRENT.set(delivery)
    try:
        yield delivery
    finally:
        _CURRENT.reset(token)


# --- an Optuna RDB storage that waits out a database restart -------------------------------

def is_disconnect(exc: BaseException) -> bool:
    """True if ``exc`` (or its cause) says the database connection was lost or refused."""
    import sqlalchemy.exc as sa

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, (sa.OperationalError, sa.InterfaceError)):
            return not _sqlite_for_good(seen.orig)
        if isinstance(seen, sa.DBAPIError) and seen.connection_invalidated:
            return True
        if type(seen).__module__.startswith("psycopg2") and type(seen).__name__ in ("OperationalError",
                                                                                   "InterfaceError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# SQLite reports everything as an OperationalError; only these may pass by waiting (another
# writer's lock, a file system that comes back). A read-only file, a full disk or a missing table
# stays so: retrying them for RECONNECT_S seconds only hid the cause behind "reconnecting".
_SQLITE_PASSING = ("database is locked", "database table is locked", "unable to open database file",
                   "disk i/o error")


def _sqlite_for_good(orig: BaseException | None) -> bool:
    """True for a SQLite error that another attempt will meet again (see ``_SQLITE_PASSING``)."""
    if orig is None or type(orig).__module__ != "sqlite3":
        return False
    message = str(orig).lower()
    return not any(passing in message for passing in _SQLITE_PASSING)


def _reconnecting(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: RDBStorage, *args: Any, **kwargs: Any) -> T:
        start, attempt = time.monotonic(), 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                if not is_disconnect(e) or time.monotonic() - start > RECONNECT_S:
                    raise
                if attempt == 0:  # the driver's error says more than Optuna's wrapper
                    _say(f"lost the Optuna database ({_first_line(e.__cause__ or e)}); "
                         f"reconnecting for up to {RECONNECT_S:.0f} s")
                time.sleep(_backoff(attempt))
                attempt += 1

    return wrapper


class ReconnectingRDBStorage(RDBStorage):
    """An ``RDBStorage`` whose calls (heartbeats included) wait out a database restart.

    Each call that fails with a lost connection is retried with backoff for up to
    ``ABLATE_RECONNECT_S`` seconds (``pool_pre_ping`` replaces the dead connections).
    Without this, the heartbeat thread dies at the first failed beat and the trial of a
    healthy worker is later failed as stale.
    """


for _name in adapters.RDB_CALLS:
    setattr(ReconnectingRDBStorage, _name, _reconnecting(adapters.rdb_method(_name)))
