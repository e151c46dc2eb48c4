"""Telling database failures apart from bugs, and saying them in one line.

Optuna wraps driver errors (StorageInternalError around SQLAlchemy's around psycopg2's
or sqlite3's), and a failure inside its trial bookkeeping can surface as an unrelated
exception whose cause is the database: so we walk the whole chain.
"""
from __future__ import annotations

import optuna
import sqlalchemy

from .urls import redact

# The exit code of a worker that gave up waiting for the database or artifact store (EX_TEMPFAIL):
# "run me again later". deploy/slurm/worker.sbatch requeues on it, deploy/k8s's worker Job
# replaces the pod without counting a failure. 1 is a user error, 2 a usage error: permanent.
TRANSIENT_EXIT = 75

# A lost connection, a server restarting, a lock timeout: worth waiting for.
TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
             optuna.exceptions.StorageInternalError)
# Answers that mean the database itself is wrong (a read-only file, a file that is not a
# database, a value too long for a column), never fixed by waiting.
PERMANENT_REASONS = ("readonly database", "not a database", "malformed", "disk image",
                     "does not exist", "password authentication failed", "no password supplied",
                     "no pg_hba.conf entry", "unable to open database file", "value too long")


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
    if any(p in reason(deepest).lower() for p in PERMANENT_REASONS):
        return None
    return cause


def database_error_line(error: BaseException) -> str | None:
    """'database error: ...' for any database failure in `error`'s chain, else None."""
    cause = caused_by(error, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
    if cause is None:
        return None
    deepest = caused_by(cause, sqlalchemy.exc.SQLAlchemyError) or cause
    return f"database error: {reason(deepest)}"
