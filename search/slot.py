"""One worker slot's process: `run_worker` (search/supervisor.py) starts `python -m search.slot
DEVICE` per GPU slot, with the worker's options as JSON in $SEARCH_WORKER_OPTIONS. Errors end
as the `search worker` command's do: one line, exit 1; a stop signal as 128 + its number."""
from __future__ import annotations

import os
import sys

from .cli import run_guarded
from core.options import from_json
from core.settings import WORKER_OPTIONS_ENV, WorkerOptions


DEVICES = ("cpu", "cuda")  # what run_worker passes: the slot's GPU is its CUDA_VISIBLE_DEVICES


def main(argv: list[str]) -> int:
    if WORKER_OPTIONS_ENV not in os.environ or len(argv) != 1 or argv[0] not in DEVICES:
        print("search.slot: started by `search worker` only (see `search worker --help`)", file=sys.stderr)
        return 2
    options = os.environ.pop(WORKER_OPTIONS_ENV)

    def run() -> int:
        from .worker import run_slot
        try:
            opts = from_json(WorkerOptions, options)
        except (TypeError, ValueError) as e:  # not what this version's `search worker` writes
            raise ValueError(f"${WORKER_OPTIONS_ENV}: not a worker's options ({e})") from None
        return run_slot(opts, argv[0])
    return run_guarded("worker", run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
