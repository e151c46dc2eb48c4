"""Which Optuna storage a command talks to: the flag, else $SEARCH_STORAGE, else the
embedded default, a SQLite file in the working directory.

SQLite rather than Optuna's journal file: the journal backend has no heartbeat, so a
killed worker's trial would stay RUNNING forever instead of being failed and retried.
"""
from __future__ import annotations

import os

STORAGE_ENV = "SEARCH_STORAGE"
DEFAULT_STORAGE = "sqlite:///search.db"
SUPPORTED = ("sqlite", "postgresql")  # the backends CI tests; others are refused, not half-supported


def resolve_storage_url(flag: str | None = None) -> str:
    return flag or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def backend_of(url: str) -> str:
    """'sqlite' or 'postgresql'; ValueError for anything else."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    backend = scheme.split("+", 1)[0]
    if backend not in SUPPORTED:
        raise ValueError(f"bad storage URL {redact(url)!r}: expected sqlite:///FILE or "
                         f"postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB")
    return backend


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
