"""Optuna RDB storage with the engine options, heartbeat and retry settings we run with."""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from core.settings import GRACE_HEARTBEATS, WORKER_DB_WAIT

from .errors import Unavailable, is_permanent, reason
from .urls import backend_of, redact, sqlite_file


CONNECT_TIMEOUT = 5  # s: a host that drops packets answers like one that is down, not after minutes
POOL_SIZE = 2               # connections a worker process keeps open
CONNECTIONS_PER_WORKER = 3  # the most it ever holds (tests/test_connections.py measures it)


class StorageUnavailable(Unavailable):
    """The database never accepted connections within the wait (transient: see Unavailable)."""


def engine_options(url: str, user_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults per backend, never overriding what the caller passed."""
    backend = backend_of(url)
    defaults: dict[str, Any] = {"pool_pre_ping": True}  # a dropped connection is replaced, not raised
    if backend == "sqlite":
        # Several local workers share one file: wait for the write lock instead of failing.
        defaults["connect_args"] = {"timeout": 60}
    else:
        # One worker process has three threads that talk to the database (trials, Optuna's
        # heartbeat, the stale-trial watch): two connections kept open, a third opened only
        # while all three overlap. CONNECTIONS_PER_WORKER is what sizes a fleet (README).
        defaults.update(pool_size=POOL_SIZE, max_overflow=CONNECTIONS_PER_WORKER - POOL_SIZE, pool_recycle=1800,
                        connect_args={"connect_timeout": CONNECT_TIMEOUT})
    return {**defaults, **(user_options or {})}


def wait_for_database(url: str, timeout: float = WORKER_DB_WAIT, interval: float = 1.0) -> None:
    """Return once the database accepts a connection; StorageUnavailable after `timeout` s."""
    try:
        engine = sqlalchemy.create_engine(url, pool_pre_ping=True, **(
            {} if backend_of(url) == "sqlite" else {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}))
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as e:
        raise ValueError(f"bad storage URL {redact(url)!r}: {e}") from e
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect():
                    return
            except sqlalchemy.exc.OperationalError as e:
                line = reason(e)
                if is_permanent(line):  # the URL is wrong, not a server still starting
                    # Permanent (a user error, exit 1), not Unavailable: waiting longer changes nothing.
                    raise ValueError(f"database {redact(url)} refused the connection: {line}") from e
                if time.monotonic() >= deadline:
                    raise StorageUnavailable(f"database {redact(url)} did not accept connections "
                                             f"within {timeout:g} s: {line}") from e
                time.sleep(interval)
    finally:
        engine.dispose()


OPTUNA_TABLES = ("studies", "version_info")  # what Optuna lays out first; no study without them


def check_initialised(url: str) -> None:
    """A ValueError unless `url` names a database Optuna has laid out (by `search create` or
    `run`), checked without creating anything: commands that only read must not leave a new
    SQLite file (or 13 empty tables) behind a mistyped path."""
    path = sqlite_file(url)
    if path is not None and not os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        why = "no such database file" + ("" if os.path.isdir(folder) else f" (no folder {folder})")
        raise ValueError(f"storage {redact(url)}: {why}; check the path (`search create` or `search run` makes it)")
    engine = sqlalchemy.create_engine(url, **({} if backend_of(url) == "sqlite" else {"connect_args": {
        "connect_timeout": CONNECT_TIMEOUT}}))
    try:
        with engine.connect() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
    finally:
        engine.dispose()
    if not set(OPTUNA_TABLES) <= tables:
        raise ValueError(f"storage {redact(url)} holds no studies (no Optuna tables: not made by `search create` "
                         f"or `search run`); check the URL")


def make_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int | None = None, wait: float = WORKER_DB_WAIT, existing: bool = False) -> RDBStorage:
    """An RDBStorage for `url`. With a heartbeat, trials of workers that stop beating
    for `grace_period` seconds are failed and re-queued (up to `max_retry` times, once each
    however many workers notice), keeping the intermediate values their checkpoint covers so
    the retry resumes from it (storage/requeue.py). With `existing` (commands that read a
    study), a database that is missing or holds no Optuna tables is refused instead of
    created (`check_initialised`)."""
    if backend_of(url) != "sqlite":  # also rejects a bad URL before anything is opened
        wait_for_database(url, timeout=wait)
    if existing:
        check_initialised(url)
    kwargs: dict[str, Any] = {}
    from .requeue import MAX_STALE_RETRIES, RequeueOnce
    if heartbeat_interval:
        kwargs = dict(heartbeat_interval=heartbeat_interval,
                      grace_period=grace_period or GRACE_HEARTBEATS * heartbeat_interval,
                      heartbeat_stale_trial_callback=RequeueOnce(max_retry=MAX_STALE_RETRIES if max_retry is None
                                                                               else max_retry))
    try:
        from .heartbeat import RDBStorageWithSteadyHeartbeat
        # Optuna's own schema check holds a transaction open on one connection while it reads
        # the schema version on a second. Behind PgBouncer in transaction mode, workers starting
        # together then each hold a server connection and wait for another: with a pool as
        # small as the number of workers, all of them wait until PgBouncer drops them. The
        # same check, one connection at a time, is `check_schema`.
        storage = RDBStorageWithSteadyHeartbeat(url, engine_kwargs=engine_options(url), skip_compatibility_check=True,
                                                **kwargs)
        check_schema(storage)
        return storage
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as e:
        raise ValueError(f"bad storage URL {redact(url)!r}: {e}") from e
    except sqlalchemy.exc.OperationalError as e:
        raise StorageUnavailable(f"cannot open storage {redact(url)}: {reason(e)}") from e


def check_schema(storage: RDBStorage) -> None:
    """Refuse a database whose tables another Optuna version laid out, as Optuna does."""
    current, head = storage.get_current_version(), storage.get_head_version()
    if current != head:
        how = ("run `optuna storage upgrade --storage URL`" if current in storage.get_all_versions()
               else "upgrade optuna (pip install -U optuna)")
        raise ValueError(f"the database's Optuna tables are at schema version {current}, this Optuna needs {head}: {how}")


def quiet_optuna() -> None:
    """Our logs say what happened per trial; Optuna's INFO lines and its notes that the
    heartbeat and retry APIs are experimental would drown them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
