"""Real servers for the multi-host tests, on loopback, in temporary directories: an
S3-compatible object store (moto in server mode) and PgBouncer in front of PostgreSQL."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.servers import free_port, wait_until


class S3Server:
    """moto's S3 in server mode: a real HTTP endpoint boto3 talks to as it talks to AWS."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_DEFAULT_REGION": "us-east-1"}
        self.proc: subprocess.Popen | None = None

    def start(self, *buckets: str) -> "S3Server":
        """Start the server; `buckets` are created the moment it answers (a worker retrying
        meanwhile would otherwise meet an empty server: moto keeps nothing across restarts)."""
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if buckets:
            import botocore.config
            import botocore.exceptions
            # no retries of botocore's own: its back-off would leave the server empty for a second
            client = self.client(botocore.config.Config(retries={"total_max_attempts": 1}))
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.create_bucket(Bucket=buckets[0])
                    break
                except botocore.exceptions.EndpointConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            for b in buckets[1:]:
                client.create_bucket(Bucket=b)

        def up() -> bool:
            try:
                return urllib.request.urlopen(self.endpoint, timeout=1).status == 200
            except OSError:
                return False
        wait_until(up, 60, "the S3 server")
        return self

    def client(self, config=None):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1", config=config)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class PgBouncer:
    """Debian's pgbouncer in transaction pooling mode in front of `postgres` (trust auth)."""

    def __init__(self, postgres, pool_size: int = 4, max_client_conn: int = 500, query_wait_timeout: int = 120):
        self.postgres = postgres
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="resnet-search-pgbouncer-"))
        self.pool_size, self.max_client_conn = pool_size, max_client_conn
        self.query_wait_timeout = query_wait_timeout  # s a client waits for a server connection before it is dropped
        self.proc: subprocess.Popen | None = None

    def url(self, database_url: str) -> str:
        """`database_url` (on the PostgreSQL server) reached through this bouncer."""
        name = database_url.rsplit("/", 1)[1]
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> "PgBouncer":
        (self.root / "users.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(f"""[databases]
* = host=127.0.0.1 port={self.postgres.port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root}/users.txt
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = {self.max_client_conn}
query_wait_timeout = {self.query_wait_timeout}
logfile = {self.root}/pgbouncer.log
pidfile = {self.root}/pgbouncer.pid
admin_users = postgres
""")
        as_user: list[str] = []
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            for f in self.root.iterdir():
                os.chown(f, pw.pw_uid, pw.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        self.proc = subprocess.Popen([*as_user, "/usr/sbin/pgbouncer", str(self.root / "pgbouncer.ini")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            import sqlalchemy
            engine = sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres")
            try:
                with engine.connect():
                    return True
            except sqlalchemy.exc.OperationalError:
                return False
            finally:
                engine.dispose()
        wait_until(up, 30, "pgbouncer")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


class SlurmCluster:
    """A real single-node Slurm (Debian's slurmctld, slurmd, munge) configured in a temporary
    directory, CPU only, without cgroups (proctrack/linuxproc, task/none). Needs root, as
    slurmd does to run jobs."""

    def __init__(self, cpus: int = 3):
        import socket
        assert os.geteuid() == 0, "the Slurm test starts slurmd, which must run as root"
        self.root = Path(tempfile.mkdtemp(prefix="resnet-search-slurm-"))
        self.root.chmod(0o700)  # munged refuses a key or socket in a directory others can write
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.cpus = cpus

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=60, check=check)

    def start(self) -> "SlurmCluster":
        r = self.root
        subprocess.run(["/usr/sbin/mungekey", "-c", "-k", str(r / "munge.key")], check=True)
        (r / "munge.key").chmod(0o400)
        subprocess.run(["/usr/sbin/munged", "-f", f"--socket={r}/munge.sock", f"--key-file={r}/munge.key",
                        f"--log-file={r}/munged.log", f"--pid-file={r}/munged.pid", f"--seed-file={r}/munged.seed"],
                       check=True)
        for d in ("state", "spool"):
            (r / d).mkdir()
        self.conf.write_text(f"""ClusterName=resnetsearch
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={r}/munge.sock
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        self.run("/usr/sbin/slurmctld", "-i", "-f", str(self.conf))
        self.run("/usr/sbin/slurmd", "-f", str(self.conf))
        wait_until(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", check=False).stdout, 60, "an idle Slurm node")
        return self

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (the fields of an array task, or of a finished job
        while Slurm still remembers it)."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def stop(self) -> None:
        self.run("scancel", "--full", "--user=root", check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.root / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), 15)
                except (ProcessLookupError, ValueError):
                    pass
        time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)
