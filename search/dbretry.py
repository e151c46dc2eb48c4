"""Worker database calls that ride out outages: every call a worker makes outside a
trial goes through `DatabaseRetry.call`, which waits with back-off while the database
is unreachable and gives up, with one line, once an outage has lasted `--db-wait`.

Written here because neither Optuna nor SQLAlchemy retries a failed call (SQLAlchemy's
pool_pre_ping only replaces a connection found dead before use)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from storage.database import StorageUnavailable
from storage.errors import reason, transient_database_error

T = TypeVar("T")
DB_RETRY_SECONDS = (1, 2, 3, 5)  # back-off while the database is unreachable (then every 5 s: cheap for the server)


class StoppedWaiting(RuntimeError):
    """The worker was asked to stop while it waited for the database."""


class DatabaseRetry:
    def __init__(self, wait: float, label: str, should_stop: Callable[[], bool] = lambda: False,
                 delays: tuple[float, ...] = DB_RETRY_SECONDS):
        self.wait, self.label, self.should_stop, self.delays = wait, label, should_stop, delays
        self.down_since: float | None = None  # start of the outage in progress
        self.failures = 0

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)`, retried while the database is away; other errors pass through."""
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                if transient_database_error(e) is None:
                    raise
                self.failed(e)
                continue
            self.recovered()
            return result

    def failed(self, error: BaseException) -> None:
        """Note a database failure and wait before the next try; StorageUnavailable once the
        outage has lasted the whole wait."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        cause = transient_database_error(error) or error
        left = self.down_since + self.wait - now
        if left <= 0:
            raise StorageUnavailable(f"the database was unreachable for {now - self.down_since:.0f} s "
                                     f"(--db-wait {self.wait:g}): {reason(cause)}") from error
        delay = min(self.delays[min(self.failures, len(self.delays) - 1)], max(left, 0.5))
        self.failures += 1
        print(f"[{self.label}] database error ({reason(cause)}); retrying in {delay:g} s", flush=True)
        end = time.monotonic() + delay
        while time.monotonic() < end:  # in steps, so a stop request is seen at once
            if self.should_stop():
                raise StoppedWaiting("stopped while waiting for the database")
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def recovered(self) -> None:
        if self.down_since is not None:
            print(f"[{self.label}] database reachable again after {time.monotonic() - self.down_since:.0f} s",
                  flush=True)
        self.down_since, self.failures = None, 0
