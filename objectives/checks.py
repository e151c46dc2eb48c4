"""Type-and-range checks for values read from JSON and flags: each raises a ValueError
that names the field, so a bad space or recipe is refused where it is written (at
`search create`), not in a worker hours later. JSON gives us bools where ints are
expected, strings where numbers are, NaN via Python's parser: each is refused here."""
from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_CHOICES = 256           # values in one list of a space: more is a generated file, not a choice
MAX_JSON_CHARS = 1_000_000  # a space or architecture file is a few kilobytes
MAX_JSON_DEPTH = 32         # a space nests three levels; Python's parser recurses once per level


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """A finite real number (int or float, not bool, not NaN or infinity)."""
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def number(where: str, x: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, integer: bool = False) -> Any:
    """`x` if it is a finite number (an integer when `integer`) within the bounds; else a
    ValueError 'where: must be ..., got x'."""
    kind = "an integer" if integer else "a number"
    show = lambda v: f"{v:,}" if is_int(v) else f"{v:g}"  # noqa: E731
    if lo is not None and hi is not None:
        bounds = f" in {'(' if lo_open else '['}{show(lo)}, {show(hi)}{')' if hi_open else ']'}"
    elif lo is not None:
        bounds = f" {'>' if lo_open else '>='} {show(lo)}"
    elif hi is not None:
        bounds = f" {'<' if hi_open else '<='} {show(hi)}"
    else:
        bounds = ""
    ok = is_int(x) if integer else is_number(x)
    if ok and lo is not None:
        ok = x > lo if lo_open else x >= lo
    if ok and hi is not None:
        ok = x < hi if hi_open else x <= hi
    if not ok:
        raise ValueError(f"{where}: must be {kind}{bounds}, got {x!r}")
    return x


def choice(where: str, x: Any, allowed: tuple) -> Any:
    if isinstance(x, bool) != any(isinstance(a, bool) for a in allowed) or x not in allowed:
        raise ValueError(f"{where}: must be one of {', '.join(map(str, allowed))}, got {x!r}")
    return x


def boolean(where: str, x: Any) -> bool:
    if not isinstance(x, bool):
        raise ValueError(f"{where}: must be true or false, got {x!r}")
    return x


def low_high(where: str, x: Any) -> tuple:
    """A `[low, high]` pair of finite numbers with low <= high (the bounds are checked by the caller)."""
    if not isinstance(x, (list, tuple)) or len(x) != 2 or not all(is_number(v) for v in x):
        raise ValueError(f"{where}: must be [low, high] (two numbers), got {_show(x)}")
    if x[0] > x[1]:
        raise ValueError(f"{where}: must be [low, high] with low <= high, got {list(x)}")
    return tuple(x)


def non_empty_list(where: str, x: Any) -> tuple:
    if not isinstance(x, (list, tuple)) or not x:
        raise ValueError(f"{where}: must be a non-empty list, got {_show(x)}")
    if len(x) > MAX_CHOICES:
        raise ValueError(f"{where}: must hold at most {MAX_CHOICES} values, got {len(x):,}")
    return tuple(x)


def parse_json(where: str, text: str) -> Any:
    """`text` as JSON once its size and nesting are within bounds, checked before parsing: a
    deeply nested file would exhaust the parser's recursion, a huge one the memory."""
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"{where}: {len(text):,} characters is too large (at most {MAX_JSON_CHARS:,})")
    depth = 0
    for bracket in re.sub(r'"(?:[^"\\]|\\.)*"', "", text):  # strings removed: their brackets are text
        if bracket in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep")
        elif bracket in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from e


def _show(x: Any) -> str:
    return repr(list(x)) if isinstance(x, tuple) else repr(x)
