"""Which Optuna storage a command talks to: the flag, else $SEARCH_STORAGE, else
the embedded default file in the working directory."""
from __future__ import annotations

import os

STORAGE_ENV = "SEARCH_STORAGE"
DEFAULT_STORAGE = "sqlite:///search.db"


def resolve_storage_url(flag: str | None = None) -> str:
    return flag or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
