"""Storage URLs: which backend a URL names, and the URL with its password hidden, both read
by SQLAlchemy's own parser (`make_url`). Which URL a command uses (flag, $SEARCH_STORAGE,
else the embedded `sqlite:///search.db`) is resolved in search/settings.py.

SQLite rather than Optuna's journal file for the embedded default: the journal backend has
no heartbeat, so a killed worker's trial would stay RUNNING forever instead of being retried.
"""
from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED = ("sqlite", "postgresql")  # the backends CI tests; others are refused, not half-supported


def _parse(url: str) -> URL | None:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return None


def backend_of(url: str) -> str:
    """'sqlite' or 'postgresql'; ValueError for anything else."""
    parsed = _parse(url)
    backend = parsed.get_backend_name() if parsed is not None else ""
    if backend not in SUPPORTED:
        raise ValueError(f"bad storage URL {redact(url)!r}: expected sqlite:///FILE or "
                         f"postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB")
    return backend


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs; text that is no URL unchanged."""
    if "://" not in url:
        return url
    parsed = _parse(url)
    if parsed is None:  # unreadable, so its password cannot be told apart: show the scheme only
        return url.split("://", 1)[0] + "://***" if "@" in url else url
    if parsed.password is None:
        return url  # as given (render_as_string would escape a SQLite URI's "file:")
    return parsed.render_as_string(hide_password=True)
