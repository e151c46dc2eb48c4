"""Options declared once, as dataclass fields: `option` gives a field its help text and argparse
arguments, `add_flags` turns the fields into `--NAME` options, and `to_json`/`from_json` carry
a built object to another process (a worker's slots) without writing it back as flags.

Also the argparse value types the command line shares: each refuses a bad value with one line.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


def option(help: str, default: Any = None, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also the command-line option `--NAME` (underscores as dashes).
    `%(default)s` in `help` shows the field's default."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add an option for each of `cls`'s fields declared with `option`, in field order."""
    for f in fields(cls):
        if "help" in f.metadata:
            default = None if f.default is MISSING else f.default
            parser.add_argument("--" + f.name.replace("_", "-"), default=default, **f.metadata)


def to_json(obj: Any) -> str:
    return json.dumps(asdict(obj))


def from_json(cls: type[T], text: str) -> T:
    return cls(**json.loads(text))


# ---- argparse value types -----------------------------------------------------------------

def integer(text: str) -> int:
    """An integer; thousands separators allowed (5,000,000 or 5_000_000)."""
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def int_in(low: int, high: int):
    def parse(text: str) -> int:
        value = positive_int(text) if low >= 1 else integer(text)
        if not (low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be in [{low:,}, {high:,}], got {value:,}")
        return value
    return parse


def seconds(low: float, high: float, what: str = "seconds"):
    """A finite number of seconds in [low, high] (NaN, inf and 0-as-"no limit" refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (low <= value <= high):  # also false for NaN
            raise argparse.ArgumentTypeError(f"must be {what} in [{low:,.0f}, {high:,.0f}], got {text}")
        return value
    return parse
