"""Storage URLs: which backend a URL names, and the URL with its password hidden, both read
by SQLAlchemy's own parser (`make_url`). Which URL a command uses (flag, $SEARCH_STORAGE,
else the embedded `sqlite:///search.db`) is resolved in core/settings.py.

SQLite rather than Optuna's journal file for the embedded default: the journal backend has
no heartbeat, so a killed worker's trial would stay RUNNING forever instead of being retried.
"""
from __future__ import annotations

import functools

import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED = ("sqlite", "postgresql")  # the backends CI tests; others are refused, not half-supported
# What RFC 3986 lets a URL's user name and password hold unescaped; anything else (@ / ? # space ...)
# must be percent-escaped, or the URL splits in the wrong place and shows a piece of the password.
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*")
ESCAPE_HINT = ("characters such as @ / ? # in the user name or password must be percent-escaped: write the "
               "password as urllib.parse.quote(PASSWORD, safe='') returns it (p@ss/w becomes p%40ss%2Fw)")


def _parse(url: str) -> URL | None:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return None


def _userinfo(url: str) -> str | None:
    """The raw `user:password` part of `url` as the user typed it (None if there is none), read
    without SQLAlchemy's parser: that one stops the password at its first '@'."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    if not rest or rest.startswith("/"):  # sqlite:///FILE: a path, even one holding '@'
        return None
    head = rest.split("?", 1)[0]  # the query may hold '@' (application_name=a@b)
    if "@" in head:
        return head.rsplit("@", 1)[0]
    at = rest.rfind("@")  # a '?' inside the password: the '@' after it, with no '/' or '=' between
    if at > 0 and not any(c in rest[len(head):at] for c in "/="):
        return rest[:at]
    return None


def needs_escaping(url: str) -> bool:
    """Whether the URL's user name or password holds a character that must be percent-escaped."""
    info = _userinfo(url)
    return info is not None and _USERINFO.fullmatch(info) is None


def check_url(url: str) -> None:
    """A ValueError, showing no part of the password, when the URL's user:password part is not escaped."""
    if needs_escaping(url):
        raise ValueError(f"bad storage URL {redact(url)!r}: {ESCAPE_HINT}")


@functools.lru_cache(maxsize=32)  # opening one storage asks several times of the same URL
def backend_of(url: str) -> str:
    """'sqlite' or 'postgresql'; ValueError for anything else (an unescaped password too)."""
    check_url(url)
    parsed = _parse(url)
    backend = parsed.get_backend_name() if parsed is not None else ""
    if backend not in SUPPORTED:
        raise ValueError(f"bad storage URL {redact(url)!r}: expected sqlite:///FILE or "
                         f"postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB")
    return backend


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names (`sqlite:///FILE`, or a `file:` URI with uri=true); None for
    another backend or an in-memory database."""
    parsed = _parse(url)
    if parsed is None or parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if parsed.query.get("uri") == "true" and database.startswith("file:"):
        database = database[len("file:"):].split("?", 1)[0]
    return None if database in ("", ":memory:") else database


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs; text that is no URL unchanged."""
    if "://" not in url:
        return url
    if needs_escaping(url):  # where the password ends cannot be told: show the scheme only
        return url.split("://", 1)[0] + "://***"
    parsed = _parse(url)
    if parsed is None:  # unreadable, so its password cannot be told apart: show the scheme only
        return url.split("://", 1)[0] + "://***" if "@" in url else url
    if parsed.password is None:
        return url  # as given (render_as_string would escape a SQLite URI's "file:")
    return parsed.render_as_string(hide_password=True)
