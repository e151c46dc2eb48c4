"""Options declared once, as dataclass fields: `option` gives a field its help text and argparse
arguments, `add_flags` turns the fields into `--NAME` options, and `to_json`/`from_json` carry
a built object to another process (a worker's slots) without writing it back as flags.

Also the argparse value types the command line shares: each refuses a bad value with one line.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, asdict, field, fields
from pathlib import Path
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


# ---- output paths -------------------------------------------------------------------------
# `--out` names a file in a folder that exists, as cp and torch.save take it: a mistyped folder
# is an error, not a new tree of folders. An existing file is replaced only with `--force`.

def output_file(path: str | Path, force: bool, what: str = "file") -> Path:
    """`path` once it can be written as a new file (or, with `force`, over an old one); a
    ValueError saying why not otherwise. Nothing is created here."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{path}: cannot write the {what}: it is a folder (name a file in it)")
    _writable_folder(p.parent, path, what)
    if p.exists() and not force:
        raise ValueError(f"{path}: exists; add --force to replace it")
    return p


def output_folder(path: str | Path, force: bool, marker: str, what: str) -> Path:
    """A folder to write `what` into: made if missing, but only inside a folder that exists;
    one that already holds `marker` (an earlier output) is written over only with `force`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{path}: cannot write the {what}: it is a file, not a folder")
    if p.is_dir():
        _writable_folder(p, path, what)
        if (p / marker).exists() and not force:
            raise ValueError(f"{path}: holds a {what} already ({marker}); add --force to replace it")
    else:
        _writable_folder(p.parent, path, what)
    return p


def _writable_folder(folder: Path, path: str | Path, what: str) -> None:
    if not folder.is_dir():
        raise ValueError(f"{path}: cannot write the {what}: no folder {folder} (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot write the {what}: folder {folder} is not writable")
