"""The database connections a fleet costs: each worker process holds at most
CONNECTIONS_PER_WORKER (measured in pg_stat_activity), and a study runs through PgBouncer
in transaction mode, which keeps the server side at its pool size however many workers."""
from __future__ import annotations

import json
import subprocess
import threading

import pytest
import sqlalchemy
from optuna.trial import TrialState

from storage.database import CONNECTIONS_PER_WORKER
from tests.fleet_servers import PgBouncer
from tests.helpers import FIXED_SPACE, SEARCH, load, search

SPACE = dict(FIXED_SPACE, recipe=dict(FIXED_SPACE["recipe"], epochs=[2, 2]))


class ConnectionSampler:
    """Counts server connections to one database (pg_stat_activity) every 0.1 s."""

    def __init__(self, server_url: str, database: str):
        # Autocommit: pg_stat_activity is a snapshot fixed for the length of a transaction.
        self.engine = sqlalchemy.create_engine(server_url, poolclass=sqlalchemy.pool.NullPool,
                                               isolation_level="AUTOCOMMIT")
        self.database, self.samples, self.done = database, [], threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")
        with self.engine.connect() as c:  # its own connection is to the `postgres` database
            while not self.done.wait(0.1):
                self.samples.append(c.execute(query, {"d": self.database}).scalar())

    def __enter__(self) -> "ConnectionSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.engine.dispose()


def run_workers(url, study, env, tmp_path, n: int, read_url: str | None = None) -> None:
    logs = [tmp_path / f"{study}-w{i}.log" for i in range(n)]
    procs = [subprocess.Popen([SEARCH, "worker", "--study", study, "--storage", url, "--gpus", "none", "--n-trials", "2",
                               "--heartbeat", "1", "--grace", "5"], env=env, stdout=log.open("w"),
                              stderr=subprocess.STDOUT) for log in logs]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0] * n, [log.read_text() for log in logs]
    study_ = load(read_url or url, study)  # plain Optuna: read_url when its start-up cannot pass `url`
    assert len(study_.get_trials(states=(TrialState.COMPLETE,))) >= 2
    assert not study_.get_trials(states=(TrialState.RUNNING,))


@pytest.fixture
def space(tmp_path) -> str:
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    return str(tmp_path / "space.json")


def test_a_worker_holds_at_most_its_stated_connections(postgres, env, tmp_path, space):
    url = postgres.new_database()
    search("create", "--study", "conn", "--storage", url, "--space", space, "--val-size", "200", "--pruner", "none", env=env)
    with ConnectionSampler(postgres.url, url.rsplit("/", 1)[1]) as sampler:
        run_workers(url, "conn", env, tmp_path, 1)
    print(f"\nconnections of one worker (heartbeat 1 s): max {max(sampler.samples)}, "
          f"samples {len(sampler.samples)}")
    assert 1 <= max(sampler.samples) <= CONNECTIONS_PER_WORKER


def test_two_workers_through_pgbouncer_in_transaction_mode(postgres, env, tmp_path, space):
    bouncer = PgBouncer(postgres, pool_size=2).start()
    try:
        direct = postgres.new_database()
        url = bouncer.url(direct)
        search("create", "--study", "bounce", "--storage", url, "--space", space, "--val-size", "200",
               "--pruner", "none", env=env)
        with ConnectionSampler(postgres.url, direct.rsplit("/", 1)[1]) as sampler:
            run_workers(url, "bounce", env, tmp_path, 2)
        print(f"\nserver connections for two workers through PgBouncer (pool 2): max {max(sampler.samples)}")
        # Two workers could hold 2 x CONNECTIONS_PER_WORKER; the bouncer multiplexes them onto its pool.
        assert 1 <= max(sampler.samples) <= 2
    finally:
        bouncer.stop()


def test_a_worker_runs_through_a_pgbouncer_pool_of_one_server_connection(postgres, env, tmp_path, space):
    # A worker never waits for a second connection while it holds a transaction open on a first
    # (Optuna's own schema check did, at start-up): behind a transaction-mode pool smaller than
    # the workers' demand, that waits forever. With one server connection it shows at once.
    # The study is created directly: Optuna's first-time table setup does hold two (README).
    bouncer = PgBouncer(postgres, pool_size=1, query_wait_timeout=15).start()
    try:
        direct = postgres.new_database()
        search("create", "--study", "one", "--storage", direct, "--space", space, "--val-size", "200",
               "--pruner", "none", env=env)
        url = bouncer.url(direct)
        run_workers(url, "one", env, tmp_path, 1, read_url=direct)
        assert json.loads(search("status", "--study", "one", "--storage", url, "--json", env=env).stdout)["counts"]
    finally:
        bouncer.stop()
