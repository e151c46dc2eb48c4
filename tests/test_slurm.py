"""deploy/slurm/worker.sbatch on a real single-node Slurm: a 3-task array works on one study;
one task is stopped mid-trial the way Slurm stops it before its time limit (TERM to the
batch script, as --signal=B:TERM does), re-queues its trial in the study and itself in Slurm."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.fleet_servers import SlurmCluster, wait_until
from tests.helpers import FIXED_SPACE, SEARCH, load, running_checkpoint, search

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "slurm" / "worker.sbatch"
SPACE = dict(FIXED_SPACE, recipe=dict(FIXED_SPACE["recipe"], epochs=[3, 3]))
N_TRIALS = 4


@pytest.fixture
def slurm():
    cluster = SlurmCluster(cpus=3).start()
    yield cluster
    cluster.stop()


def test_array_survives_a_stop_before_the_time_limit(slurm, postgres, env, tmp_path):
    url = postgres.new_database()
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    artifacts = tmp_path / "artifacts"  # the directory every node would mount
    search("create", "--study", "slurm", "--storage", url, "--space", str(tmp_path / "space.json"), "--val-size", "200",
           "--pruner", "none", "--artifacts", str(artifacts), env=env)
    job_env = {k: v for k, v in env.items() if k != "SEARCH_ARTIFACTS"}
    job_env.update(slurm.env, SEARCH_STORAGE=url, SEARCH_BIN=SEARCH)
    slurm.env.update(job_env)  # sbatch exports the submitting environment to the tasks
    # The script as written, with this CPU-only test node's resources instead of its GPU defaults.
    submit = slurm.run("sbatch", "--parsable", "--array=0-2", "--gres=none", "--cpus-per-task=1", "--mem=500M",
                       f"--output={tmp_path}/task-%a.out", f"--chdir={tmp_path}", str(SCRIPT),
                       "--study", "slurm", "--n-trials", str(N_TRIALS), "--heartbeat", "1", "--grace", "5",
                       check=False)
    assert submit.returncode == 0, submit.stderr
    array = submit.stdout.strip().split(";")[0]

    def checkpointed():
        outs = "\n".join(_read(tmp_path / f"task-{i}.out") for i in range(3))
        assert slurm.run("squeue", "-h", "-j", array).stdout.strip(), f"the array ended early:\n{outs}"
        return running_checkpoint(url, "slurm", 1)
    trial, ref = wait_until(checkpointed, 300, "a trial with an epoch checkpoint")
    victim_pid = trial.user_attrs["worker"]["pid"]
    task = next(i for i in range(3) if f"worker pid {victim_pid}" in _read(tmp_path / f"task-{i}.out"))
    complete_before = {t.number for t in load(url, "slurm").get_trials(states=(TrialState.COMPLETE,))}
    stopped_at = time.monotonic()
    slurm.run("scancel", "--batch", "--signal=TERM", f"{array}_{task}")
    # Slurm requeues the task (the script asked it to after the worker exited 143)...
    wait_until(lambda: slurm.job(f"{array}_{task}").get("Restarts") == "1", 120, "the task to be requeued")
    requeue_seconds = time.monotonic() - stopped_at
    # ...and holds it for 121 s before it may start again; release it now to keep the test short
    # (once it is PENDING: a task still completing refuses the update).
    wait_until(lambda: slurm.job(f"{array}_{task}").get("JobState") == "PENDING", 60, "the requeued task to pend")
    slurm.run("scontrol", "update", f"JobId={array}_{task}", "StartTime=now")

    wait_until(lambda: not slurm.run("squeue", "-h", "-j", array).stdout.strip(), 400, "the array to finish")
    log = _read(tmp_path / f"task-{task}.out")
    assert "worker exited 143" in log, log  # stopped by the signal, not "finished"
    for i in set(range(3)) - {task}:
        info = slurm.job(f"{array}_{i}")
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (i, info, _read(tmp_path / f"task-{i}.out"))

    study = load(url, "slurm")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    stopped = study.trials[trial.number]
    assert stopped.state == TrialState.FAIL and "worker stopped" in stopped.user_attrs["fail_reason"]
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["worker"]["pid"] != victim_pid
    assert retry.user_attrs["resumed_from_epoch"] >= ref["epoch"] >= 1
    complete = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert complete_before <= complete and len(complete) >= N_TRIALS  # nothing lost, target reached
    assert all((artifacts / study.trials[n].user_attrs["model_artifact"]).exists() for n in complete)
    print(f"\nSlurm drill: task {task} stopped mid-trial {trial.number} after its epoch-{ref['epoch']} "
          f"checkpoint; task requeued in Slurm {requeue_seconds:.1f} s later; retry trial {retry.number} resumed "
          f"after epoch {retry.user_attrs['resumed_from_epoch']} in another task; "
          f"{len(complete)} complete trials")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
