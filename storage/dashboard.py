"""optuna-dashboard over a study storage with its artifact store, S3 included.

`optuna-dashboard --artifact-dir` knows directories only, and its TOML config's boto3 store
has no key prefix; this opens the store the way workers do (storage/artifacts.py) and hands
it to optuna_dashboard.run_server. The artifact location: --artifacts, else $SEARCH_ARTIFACTS,
else the one the storage's studies remember (it must be one), else ./artifacts.

    python -m storage.dashboard [--storage URL] [--artifacts LOCATION] [--host H] [--port P]
"""
from __future__ import annotations

import argparse
import sys

import optuna

from core.settings import DASHBOARD_PORT, STORAGE_DEFAULT, WORKER_DB_WAIT, given_artifacts, storage_url

from .artifacts import LOCATION_ATTR, open_artifact_store
from .database import make_storage, quiet_optuna


def remembered_location(storage) -> str | None:
    """The artifact location the storage's studies remember, if they agree on one."""
    found = {s.user_attrs.get(LOCATION_ATTR) for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    found.discard(None)
    if len(found) > 1:
        raise ValueError(f"the studies here keep artifacts in {len(found)} places ({', '.join(sorted(found))}): "
                         f"pick one with --artifacts")
    return found.pop() if found else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m storage.dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", help=f"study storage URL (default: {STORAGE_DEFAULT})")
    p.add_argument("--artifacts", help="a directory or s3://BUCKET/PREFIX (default: see above)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: no authentication)")
    p.add_argument("--port", type=int, default=DASHBOARD_PORT)
    p.add_argument("--db-wait", type=float, default=WORKER_DB_WAIT, metavar="SEC")
    p.add_argument("--verbose", action="store_true", help="print every HTTP request (default: off)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        quiet_optuna()
        storage = make_storage(storage_url(args.storage), wait=args.db_wait)
        flag = given_artifacts(args.artifacts) or remembered_location(storage)
        store = open_artifact_store(flag, create=False)
    except ValueError as e:
        print(f"dashboard: error: {e}", file=sys.stderr)
        return 1
    serve(storage, store, args.host, args.port, args.verbose)
    return 0


def check_port(host: str, port: int) -> None:
    """A ValueError unless `host`:`port` can be listened on now (tried as the server will: with
    SO_REUSEADDR), so a port in use is one line instead of the web server's banner and traceback."""
    import socket
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port)") from None


def serve(storage, store, host: str, port: int, verbose: bool = False) -> None:
    """optuna-dashboard over `storage` with `store` (directory or S3), so artifacts download;
    `search dashboard` and this module's entry point (Kubernetes) both serve through here.

    `optuna_dashboard.run_server` is its WSGI app under bottle's `run`, which prints every HTTP
    request (the page polls: about one line a second); the same two pieces with bottle's own
    `quiet` print none of them unless `verbose`."""
    from bottle import run
    from optuna_dashboard import wsgi
    run(wsgi(storage, artifact_store=store), host=host, port=port, quiet=not verbose)


if __name__ == "__main__":
    sys.exit(main())
