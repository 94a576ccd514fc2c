"""Optuna storage shared by ablations and studies: SQLite by default, PostgreSQL for teams.

Heartbeats mark a killed worker's trial stale; the stale trial is failed and re-queued
(``RetryHeartbeatStaleTrialCallback``), so a study or an ablation resumes after any crash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback

from ablate.errors import AblateError
from ablate.resilience import ReconnectingRDBStorage

# A trial whose worker has not beaten for GRACE seconds is failed and retried. Short enough to
# recover quickly, long enough that a busy CPU step never misses a beat.
HEARTBEAT_S = int(os.environ.get("ABLATE_HEARTBEAT_S", "10"))
GRACE_S = int(os.environ.get("ABLATE_GRACE_S", str(3 * HEARTBEAT_S)))
MAX_RETRY = 3
SQLITE_LOCK_WAIT_S = 60  # how long a SQLite storage call waits for another worker's transaction


def default_storage_url() -> str:
    Path("mlruns").mkdir(exist_ok=True)
    return f"sqlite:///{Path('mlruns/optuna.db').resolve()}"


def resolve_storage_url(url: str | None) -> str:
    """``url`` > ``$ABLATE_STORAGE`` > SQLite under mlruns/. ``postgresql://`` means psycopg2 (the team extra)."""
    url = url or os.environ.get("ABLATE_STORAGE") or default_storage_url()
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]  # SQLAlchemy 2.1 would pick psycopg 3
    return url


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats and retry of stale trials (or a journal file)."""
    url = resolve_storage_url(url)
    require_driver(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    sqlite = url.startswith("sqlite")
    try:
        storage = ReconnectingRDBStorage(  # waits out a database restart instead of failing the trial
            url,
            engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_WAIT_S}} if sqlite else {"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )
    except Exception as e:  # noqa: BLE001 - SQLAlchemy/driver errors vary; one clear line
        raise AblateError(f"Cannot open the Optuna storage '{redact(url)}': {str(e).splitlines()[0]}") from None
    if sqlite:
        lock_on_begin(storage.engine)
    return storage


def require_driver(url: str) -> None:
    """Raises ``AblateError`` naming the install when a PostgreSQL ``url``'s driver is missing.

    psycopg2 comes with the ``team`` extra only; without this check Optuna's message says to
    "install appropriate one" without naming it.
    """
    if not url.startswith("postgresql+psycopg2://"):
        return
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise AblateError(
            "A PostgreSQL storage needs psycopg2, which is not installed: "
            "run `pip install 'ablate[team]'` (or `make .venv/.installed-team`)."
        ) from None


def lock_on_begin(engine: sqlalchemy.engine.Engine) -> None:
    """Makes every transaction on a SQLite ``engine`` take the database's write lock when it begins.

    Optuna takes a queued trial by reading that it is WAITING, then writing RUNNING (its ``SELECT
    ... FOR UPDATE`` is a no-op on SQLite). Python's sqlite3 begins a transaction only at the first
    write, so two workers could both read WAITING and both run the trial, with two MLflow runs for
    one arm and seed. ``BEGIN IMMEDIATE`` makes the read and the write one step: the other worker
    waits for the lock (up to ``SQLITE_LOCK_WAIT_S``) and then reads RUNNING. It serialises the
    storage's transactions across processes, which the few workers of a local SQLite store
    hardly notice; a team's PostgreSQL locks the row itself.
    """
    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN, at the first write, is off

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners reopen with them


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" not in creds:
            return url  # a user name without a password
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def load_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "(none)"
        raise AblateError(f"No study or ablation named '{name}' in the storage. Known: {known}.") from None
