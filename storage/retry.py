"""Worker calls that ride out outages: every call a worker makes to the database outside a
trial goes through `DatabaseRetry.call`, and every read, write and delete of an artifact
(checkpoints, models) through `StoreRetry.call`; both wait with back-off while the service is
unreachable and give up, with one line, once an outage has lasted `--db-wait` / `--store-wait`.

Written here because neither Optuna nor SQLAlchemy retries a failed call (SQLAlchemy's
pool_pre_ping only replaces a connection found dead before use), and Optuna's artifact
stores do not either (botocore's own retries cover about a second; a file write none)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from storage.database import StorageUnavailable
from storage.errors import StoreUnavailable, reason, store_reason, transient_database_error, transient_store_error

T = TypeVar("T")
DB_RETRY_SECONDS = (1, 2, 3, 5)  # back-off while the database is unreachable (then every 5 s: cheap for the server)


class StoppedWaiting(RuntimeError):
    """The worker was asked to stop while it waited for the database or the artifact store."""


class DatabaseRetry:
    NOUN, FLAG = "database", "--db-wait"     # what is waited for, in messages
    unavailable = StorageUnavailable          # raised once the wait is over
    transient = staticmethod(transient_database_error)
    say = staticmethod(reason)

    def __init__(self, wait: float, label: str, should_stop: Callable[[], bool] = lambda: False,
                 delays: tuple[float, ...] = DB_RETRY_SECONDS):
        self.wait, self.label, self.should_stop, self.delays = wait, label, should_stop, delays
        self.down_since: float | None = None  # start of the outage in progress
        self.failures = 0
        self.context = ""  # what the calls are for now ("trial 3"), in messages

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)`, retried while the service is away; other errors pass through."""
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                if self.transient(e) is None:
                    raise
                self.failed(e)
                continue
            self.recovered()
            return result

    def failed(self, error: BaseException) -> None:
        """Note a failure and wait before the next try; `unavailable` once the outage has lasted
        the whole wait."""
        what = self.context
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        cause = self.transient(error) or error
        left = self.down_since + self.wait - now
        if left <= 0:
            raise self.unavailable(f"the {self.NOUN} was unreachable for {now - self.down_since:.0f} s "
                                   f"({self.FLAG} {self.wait:g}){' during ' + what if what else ''}: "
                                   f"{self.say(cause)}") from error
        delay = min(self.delays[min(self.failures, len(self.delays) - 1)], max(left, 0.5))
        self.failures += 1
        print(f"[{self.label}] {self.NOUN} error{' (' + what + ')' if what else ''}: {self.say(cause)}; "
              f"retrying in {delay:g} s", flush=True)
        end = time.monotonic() + delay
        while time.monotonic() < end:  # in steps, so a stop request is seen at once
            if self.should_stop():
                raise StoppedWaiting(f"stopped while waiting for the {self.NOUN}")
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def recovered(self) -> None:
        if self.down_since is not None:
            print(f"[{self.label}] {self.NOUN} reachable again after {time.monotonic() - self.down_since:.0f} s",
                  flush=True)
        self.down_since, self.failures = None, 0


class StoreRetry(DatabaseRetry):
    """The same waiting for the artifact store: an S3 endpoint away or busy, a full disk, a
    network filesystem that does not answer."""
    NOUN, FLAG = "artifact store", "--store-wait"
    unavailable = StoreUnavailable
    transient = staticmethod(transient_store_error)
    say = staticmethod(store_reason)
