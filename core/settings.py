"""Settings resolved once: a setting's flag wins, then its environment variable, then its
default, and every default is declared here (as optuna-dashboard's `_config.py` resolves
CLI > environment > default in one place). The command line resolves a parsed command with
`resolve` before it runs; the study definition, the storage and the workers read these names.

Standard library only: `search --help` builds its parser from here without torch or Optuna.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

from .options import int_in, option, positive_int, seconds

# ---- environment variables ----------------------------------------------------------------
STORAGE_ENV = "SEARCH_STORAGE"
ARTIFACTS_ENV = "SEARCH_ARTIFACTS"
DATA_DIR_ENV = "SEARCH_DATA_DIR"
DEBUG_ENV = "SEARCH_DEBUG"                  # set: an unexpected error shows its traceback
WORKER_OPTIONS_ENV = "SEARCH_WORKER_OPTIONS"  # a slot process's options (search/slot.py)
CHECKPOINT_EVERY_ENV = "SEARCH_CHECKPOINT_EVERY"

# ---- where things live (relative paths: the working directory) ------------------------------
DEFAULT_STORAGE = "sqlite:///search.db"  # embedded: a first run needs no database server
DEFAULT_ARTIFACTS = "artifacts"
DEFAULT_DATA_DIR = "data"

# ---- a study's definition -----------------------------------------------------------------
CIFAR10_TRAIN_IMAGES = 50_000
DEFAULT_BUDGET = 5_000_000   # trainable parameters
DEFAULT_VAL_SIZE = 5_000     # images held out of the training images for validation
DEFAULT_SEED = 0             # of the validation split and of each trial's training

# ---- workers and the database -------------------------------------------------------------
DEFAULT_HEARTBEAT = 20       # s between heartbeats of a running trial
GRACE_HEARTBEATS = 3         # a trial silent this many heartbeats is failed and retried
DEFAULT_GRACE = GRACE_HEARTBEATS * DEFAULT_HEARTBEAT
MAX_HEARTBEAT = 3_600        # longer beats make a dead worker's trial wait hours to be retried
MAX_GRACE = 86_400
WORKER_DB_WAIT = 60.0        # workers ride out database restarts and outages this long
WORKER_STORE_WAIT = 60.0     # ... and artifact-store outages (S3 away, a full disk) this long
# A resume checkpoint after every epoch: a killed trial redoes at most the epoch it was in.
# Larger K trades redone epochs for upload volume (README "Checkpoints").
DEFAULT_CHECKPOINT_EVERY = 1
INTERACTIVE_DB_WAIT = 3.0    # a person at a prompt wants an answer, not a minute of silence
MAX_DB_WAIT = 7 * 86_400.0
MAX_TIMEOUT = 52 * MAX_DB_WAIT
# create runs in start-up scripts (compose, Jobs) next to a database that may still be starting.
WAITING_COMMANDS = ("worker", "run", "create")
DASHBOARD_PORT = 8080

# ---- exit codes (README "Exit codes"; deploy/ requeues on EXIT_TRANSIENT) --------------------
EXIT_USER_ERROR = 1    # a bad input, a wrong study or URL: running again changes nothing
EXIT_USAGE = 2         # a malformed flag (argparse)
EXIT_TRANSIENT = 75    # EX_TEMPFAIL (sysexits.h): the database or the artifact store stayed unreachable
                       # past --db-wait / --store-wait; run again later (worker, run and create only)
FINALIZE_TOP = 3               # `search finalize`: configurations taken from the search
FINALIZE_SEEDS = 3             # ... and training runs (seeds) of each

# How help texts say a default that a variable overrides.
STORAGE_DEFAULT = f"${STORAGE_ENV}, else {DEFAULT_STORAGE}"
DATA_DIR_DEFAULT = f"${DATA_DIR_ENV}, else ./{DEFAULT_DATA_DIR}"
ARTIFACTS_HELP = ("checkpoints: a directory or s3://BUCKET/PREFIX (S3 endpoint and credentials from the AWS "
                  f"variables, e.g. AWS_ENDPOINT_URL) (default: ${ARTIFACTS_ENV}, else where the study "
                  f"remembers, else ./{DEFAULT_ARTIFACTS})")


def storage_url(flag: str | None = None) -> str:
    return flag or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def given_artifacts(flag: str | None = None) -> str | None:
    """The artifact location the user gave (flag, else environment), None if neither."""
    return flag or os.environ.get(ARTIFACTS_ENV) or None


def artifacts_location(flag: str | None = None, remembered: str | None = None) -> str:
    """Flag, else environment, else the location the study remembers, else ./artifacts."""
    return given_artifacts(flag) or remembered or DEFAULT_ARTIFACTS


def data_dir(flag: str | os.PathLike | None = None) -> Path:
    return Path(flag or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def checkpoint_every(flag: int | None = None) -> int:
    """Flag, else $SEARCH_CHECKPOINT_EVERY, else 1; a ValueError naming a bad variable."""
    if flag is not None:
        return flag
    text = os.environ.get(CHECKPOINT_EVERY_ENV)
    if not text:
        return DEFAULT_CHECKPOINT_EVERY
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"${CHECKPOINT_EVERY_ENV}: {e}") from None


def db_wait(flag: float | None, command: str | None) -> float:
    if flag is not None:
        return flag
    return WORKER_DB_WAIT if command in WAITING_COMMANDS else INTERACTIVE_DB_WAIT


def debug() -> bool:
    return bool(os.environ.get(DEBUG_ENV))


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in, in place, every setting a parsed command left out."""
    if hasattr(args, "storage"):
        args.storage = storage_url(args.storage)
    if hasattr(args, "db_wait"):
        args.db_wait = db_wait(args.db_wait, getattr(args, "command", None))
    if hasattr(args, "data_dir"):
        args.data_dir = str(data_dir(args.data_dir))
    if hasattr(args, "artifacts"):  # the study's remembered location is read where the study is open
        args.artifacts = given_artifacts(args.artifacts)
    return args


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker runs with. Each field with a flag is declared once: `search worker`/`run`
    add it as `--NAME` (options.add_flags), and slot processes receive the whole object as JSON."""
    study: str
    storage: str                       # the resolved URL
    db_wait: float = WORKER_DB_WAIT
    data_dir: str | None = option(f"CIFAR-10 folder (default: {DATA_DIR_DEFAULT}; downloaded if missing)")
    artifacts: str | None = option(ARTIFACTS_HELP)
    gpus: str = option("all, none (CPU), or a list like 0,1 (default %(default)s; CPU if none visible)", "all")
    per_gpu: int = option("worker processes per GPU (or CPU processes) (default %(default)s)", 1, type=positive_int)
    n_trials: int | None = option(
        "stop once the study has this many trained trials, counted over all workers; stored in the study for "
        "`search status` (default: no limit)", type=positive_int)
    timeout: float | None = option(
        "start no new trial after this many seconds (default: no limit)", type=seconds(1, MAX_TIMEOUT), metavar="SEC")
    heartbeat: int = option(
        f"heartbeat interval, at most {MAX_HEARTBEAT} (default %(default)s)", DEFAULT_HEARTBEAT,
        type=int_in(1, MAX_HEARTBEAT), metavar="SEC")
    grace: int = option(
        "a trial without heartbeat this long is failed and retried (default %(default)s)", DEFAULT_GRACE,
        type=int_in(2, MAX_GRACE), metavar="SEC")
    compile: bool = option(
        "torch.compile each trial's model: faster steps after ~40 s of compiling per new architecture (measured "
        "on CPU), so it pays off only for long trials (default: off)", False, action="store_true")
    store_wait: float = option(
        "ride out artifact-store faults (S3 unreachable, a full disk) this long, then stop with exit "
        f"{EXIT_TRANSIENT} (default %(default)s)", WORKER_STORE_WAIT, type=seconds(0, MAX_DB_WAIT), metavar="SEC")
    quiet: bool = option("print one line per trial, none per epoch (default: off)", False, action="store_true")
    checkpoint_every: int | None = option(
        "write a trial's resume checkpoint every K epochs (and after an epoch that ends while the worker is "
        "stopping): a killed trial redoes up to K-1 epochs more, and uploads about 1/K as much "
        f"(default: ${CHECKPOINT_EVERY_ENV}, else {DEFAULT_CHECKPOINT_EVERY})", type=positive_int, metavar="K")

    def __post_init__(self) -> None:
        # Resolved here rather than in `resolve`: a bad variable is then refused inside the
        # command's error handling (one line), and slot processes get the parent's number.
        object.__setattr__(self, "checkpoint_every", checkpoint_every(self.checkpoint_every))
        if self.grace <= self.heartbeat:
            # Otherwise a healthy worker's trial looks stale between two of its own heartbeats.
            raise ValueError(f"--grace ({self.grace} s) must be greater than --heartbeat ({self.heartbeat} s); "
                             f"{GRACE_HEARTBEATS} heartbeats is usual")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "WorkerOptions":
        """From a parsed, resolved `search worker`/`run` command."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
