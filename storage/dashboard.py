"""optuna-dashboard over a study storage with its artifact store, S3 included.

`optuna-dashboard --artifact-dir` knows directories only, and its TOML config's boto3 store
has no key prefix; `search dashboard` opens the store the way workers do
(storage/artifacts.py) and serves optuna-dashboard's WSGI app with it. The artifact location:
--artifacts, else $SEARCH_ARTIFACTS, else the one the study (or all the storage's studies)
remember, else ./artifacts.
"""
from __future__ import annotations

import optuna

from .artifacts import LOCATION_ATTR


def remembered_location(storage) -> str | None:
    """The artifact location the storage's studies remember, if they agree on one."""
    found = {s.user_attrs.get(LOCATION_ATTR) for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    found.discard(None)
    if len(found) > 1:
        raise ValueError(f"the studies here keep artifacts in {len(found)} places ({', '.join(sorted(found))}): "
                         f"pick one with --artifacts")
    return found.pop() if found else None


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
    `search dashboard` (here, in Compose and in Kubernetes) serves through here.

    `optuna_dashboard.run_server` is its WSGI app under bottle's `run`, which prints every HTTP
    request (the page polls: about one line a second); the same two pieces with bottle's own
    `quiet` print none of them unless `verbose`."""
    from bottle import run
    from optuna_dashboard import wsgi
    run(wsgi(storage, artifact_store=store), host=host, port=port, quiet=not verbose)

