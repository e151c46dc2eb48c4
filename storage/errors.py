"""Telling database failures apart from bugs, and saying them in one line.

Optuna wraps driver errors (StorageInternalError around SQLAlchemy's around psycopg2's
or sqlite3's), and a failure inside its trial bookkeeping can surface as an unrelated
exception whose cause is the database: so we walk the whole chain.
"""
from __future__ import annotations

import errno

import optuna
import sqlalchemy

from .urls import redact

# A lost connection, a server restarting, a lock timeout: worth waiting for.
TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
             optuna.exceptions.StorageInternalError)
# Answers that mean the database itself is wrong (a read-only file, a file that is not a
# database, a value too long for a column), never fixed by waiting.
PERMANENT_REASONS = ("readonly database", "not a database", "malformed", "disk image",
                     "does not exist", "password authentication failed", "no password supplied",
                     "no pg_hba.conf entry", "unable to open database file", "value too long")


def is_permanent(reason_line: str) -> bool:
    """Whether a driver's answer means the database or its URL is wrong (waiting cannot fix it)."""
    return any(p in reason_line.lower() for p in PERMANENT_REASONS)


def caused_by(error: BaseException, *types: type) -> BaseException | None:
    """The first exception of `types` in `error`'s chain of causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def reason(error: BaseException) -> str:
    """The driver's own first line (without SQLAlchemy's SQL dump and links, or Optuna's wrapper)."""
    inner = caused_by(error, sqlalchemy.exc.SQLAlchemyError) or error
    orig = getattr(inner, "orig", None)
    text = str(orig if orig is not None else inner).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return redact(line)


def transient_database_error(error: BaseException) -> BaseException | None:
    """The database error behind `error` if waiting could cure it (the server is away),
    None for anything else (including a read-only or damaged database file)."""
    cause = caused_by(error, *TRANSIENT)
    if cause is None:
        return None
    deepest = caused_by(cause, sqlalchemy.exc.SQLAlchemyError) or cause
    if is_permanent(reason(deepest)):
        return None
    return cause


def database_error_line(error: BaseException) -> str | None:
    """'database error: ...' for any database failure in `error`'s chain, else None."""
    cause = caused_by(error, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
    if cause is None:
        return None
    deepest = caused_by(cause, sqlalchemy.exc.SQLAlchemyError) or cause
    return f"database error: {reason(deepest)}"


class Unavailable(ValueError):
    """A service a command needs (the database, the artifact store) stayed unreachable for the
    whole of its wait. Transient: the commands a scheduler runs (`search worker`, `run`,
    `create`) exit with EXIT_TRANSIENT (core/settings.py) for it, "run me again later"."""


class StoreUnavailable(Unavailable):
    """The artifact store stayed unreachable (or full) for the whole of `--store-wait`."""


# errno values of a filesystem artifact store that waiting (or an operator) can cure: a full
# disk or quota, and what a network filesystem answers while its server is away.
TRANSIENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                    errno.ECONNREFUSED, errno.ECONNRESET)
# S3 answers that mean "the service is busy or restarting", not "this request is wrong".
TRANSIENT_S3_CODES = ("SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling",
                      "RequestTimeTooSkewed")


def _botocore_transient(error: BaseException) -> bool:
    try:
        import botocore.exceptions as be
    except ImportError:  # no boto3: no S3 store, nothing of botocore to recognise
        return False
    if isinstance(error, (be.ConnectionError, be.HTTPClientError)):  # refused, reset, timed out, DNS
        return True
    if isinstance(error, be.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or error.response.get("Error", {}).get("Code") in TRANSIENT_S3_CODES
    return False


def transient_store_error(error: BaseException) -> BaseException | None:
    """The artifact-store error behind `error` if waiting could cure it (an S3 endpoint away or
    busy, a full disk, a network filesystem not answering), None for anything else (a missing
    bucket or object, a permission denied: waiting does not fix those)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in TRANSIENT_ERRNOS:
            return current
        if _botocore_transient(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def store_reason(error: BaseException) -> str:
    """One line for an artifact-store error: a filesystem error with its path, else its text."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)
