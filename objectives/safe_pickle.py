"""Unpickling that admits numpy arrays and plain builtins, nothing else.

CIFAR-10's batches (and the course competitions' test files) are pickles, and a
pickle can run arbitrary code when loaded. The standard library's documented
remedy is an Unpickler whose find_class allows only known globals; no
maintained library offers this for numpy payloads, so it is written here.
"""
from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

# What numpy's own pickles reference (numpy 1 and 2 spell the module differently).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # Python 2 byte strings re-encoded by protocol-2 pickles
}


class UnsafePickleError(ValueError):
    """The pickle references something other than numpy arrays and builtins."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(f"refusing to load {module}.{name}: only numpy arrays, "
                                    f"lists, dicts, strings and numbers are accepted")
        return {"_reconstruct": _reconstruct, "scalar": scalar, "encode": codecs.encode,
                "ndarray": np.ndarray, "dtype": np.dtype}[name]


def safe_load(data: bytes, encoding: str = "bytes") -> Any:
    """Unpickle `data`, admitting only numpy arrays and builtin containers/values."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


class BadPickle(ValueError):
    """Truncated, corrupt, or not a pickled dict."""


def load_dict(data: bytes) -> dict[str, Any]:
    """Unpickle a dict (restricted as `safe_load`), with bytes keys decoded to str.
    Raises UnsafePickleError for code, BadPickle for anything unreadable or not a dict."""
    try:
        obj = safe_load(data, encoding="bytes")
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise BadPickle(f"{type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise BadPickle(f"expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
