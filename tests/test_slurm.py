"""deploy/slurm/worker.sbatch on a real single-node Slurm: a 3-task array works on one study.
One task is stopped mid-trial with a plain `scancel --signal=TERM` (it reaches the worker, a job
step) or the way Slurm stops it before its time limit (TERM to the batch script, as
--signal=B:TERM does): it re-queues its trial in the study and itself, alone, in Slurm, while the
other tasks run on. A `scancel` of one task or of the array sticks: nothing comes back PENDING."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.fleet_servers import SlurmCluster, wait_until
from tests.helpers import FIXED_SPACE, SEARCH, load, search

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "slurm" / "worker.sbatch"
SPACE = dict(FIXED_SPACE, recipe=dict(FIXED_SPACE["recipe"], epochs=[5, 5]))  # epochs of ~2 s here
N_TRIALS = 4


@pytest.fixture
def slurm():
    cluster = SlurmCluster(cpus=3).start()
    yield cluster
    cluster.stop()


def submit_array(slurm, env, tmp_path, url, *worker_args, tasks=3, search_bin=SEARCH) -> str:
    """The script as written, with this CPU-only test node's resources instead of its GPU
    defaults (the README's --gres=none for a partition without GPU gres)."""
    job_env = {k: v for k, v in env.items() if k != "SEARCH_ARTIFACTS"}
    job_env.update(slurm.env, SEARCH_STORAGE=url, SEARCH_BIN=search_bin)
    slurm.env.update(job_env)  # sbatch exports the submitting environment to the tasks
    submit = slurm.run("sbatch", "--parsable", f"--array=0-{tasks - 1}", "--gres=none", "--cpus-per-task=1",
                       "--mem=500M", f"--output={tmp_path}/task-%a.out", f"--chdir={tmp_path}", str(SCRIPT),
                       *worker_args, check=False)
    assert submit.returncode == 0, submit.stderr
    return submit.stdout.strip().split(";")[0]


def task_of(pid: int) -> int | None:
    """The array task a worker process belongs to (Slurm puts it in the step's environment)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"SLURM_ARRAY_TASK_ID=")]
    return int(found[0]) if found else None


def create_study(url, env, tmp_path, name, space=SPACE):
    (tmp_path / "space.json").write_text(json.dumps(space))
    search("create", "--study", name, "--storage", url, "--space", str(tmp_path / "space.json"), "--val-size", "200",
           "--pruner", "none", "--artifacts", str(tmp_path / "artifacts"), env=env)


def test_stopping_one_task_requeues_it_alone_and_the_array_carries_on(slurm, postgres, env, tmp_path):
    url = postgres.new_database()
    artifacts = tmp_path / "artifacts"  # the directory every node would mount
    create_study(url, env, tmp_path, "slurm")
    array = submit_array(slurm, env, tmp_path, url, "--study", "slurm", "--n-trials", str(N_TRIALS),
                         "--heartbeat", "1", "--grace", "5")
    # The victim is the task whose own job id is the array's: `scontrol requeue ARRAY_ID` names
    # the whole array, so requeueing it by its bare job id took every task down with it.
    wait_until(lambda: all(slurm.job(f"{array}_{i}").get("JobState") == "RUNNING" for i in range(3)), 120,
               "the three tasks to run")
    task = next(i for i in range(3) if slurm.job(f"{array}_{i}")["JobId"] == array)

    def checkpointed():
        outs = "\n".join(_read(tmp_path / f"task-{i}.out") for i in range(3))
        assert slurm.run("squeue", "-h", "-j", array).stdout.strip(), f"the array ended early:\n{outs}"
        for t in load(url, "slurm").get_trials(states=(TrialState.RUNNING,)):
            ref = t.user_attrs.get("resume_checkpoint")
            # Early in its trial: epochs left for the stop to land in (else the trial ends first).
            if ref and ref["epoch"] <= 2 and task_of(t.user_attrs["worker"]["pid"]) == task:
                return t, ref
        return None
    trial, ref = wait_until(checkpointed, 400, f"a trial of task {task} with an epoch checkpoint")
    victim_pid = trial.user_attrs["worker"]["pid"]
    complete_before = {t.number for t in load(url, "slurm").get_trials(states=(TrialState.COMPLETE,))}
    stopped_at = time.monotonic()
    # A user's plain signal (no --batch): it reaches the worker because the worker is a job step.
    slurm.run("scancel", "--signal=TERM", f"{array}_{task}")
    # Slurm requeues the task (the script asked it to after the worker exited 143)...
    wait_until(lambda: slurm.job(f"{array}_{task}").get("Restarts") == "1", 120, "the task to be requeued")
    requeue_seconds = time.monotonic() - stopped_at
    # ...and that task alone: the others run on, never requeued.
    for i in set(range(3)) - {task}:
        info = slurm.job(f"{array}_{i}")
        assert info["Restarts"] == "0" and info["JobState"] in ("RUNNING", "COMPLETING", "COMPLETED"), (i, info)
    # ...and holds it for 121 s before it may start again; release it now to keep the test short
    # (once it is PENDING: a task still completing refuses the update).
    wait_until(lambda: slurm.job(f"{array}_{task}").get("JobState") == "PENDING", 60, "the requeued task to pend")
    slurm.run("scontrol", "update", f"JobId={array}_{task}", "StartTime=now")

    wait_until(lambda: not slurm.run("squeue", "-h", "-j", array).stdout.strip(), 400, "the array to finish")
    log = _read(tmp_path / f"task-{task}.out")
    assert "worker exited 143" in log, log  # stopped by the signal, not "finished"
    for i in set(range(3)) - {task}:
        info = slurm.job(f"{array}_{i}")
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0" and info["Restarts"] == "0", \
            (i, info, _read(tmp_path / f"task-{i}.out"))

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
def test_scancel_of_a_task_or_of_the_array_sticks(slurm, postgres, env, tmp_path):
    """A user's cancel ends the task for good (the script used to requeue it as if it had been
    stopped by its time limit) and leaves no trial RUNNING in the study."""
    url = postgres.new_database()
    create_study(url, env, tmp_path, "cancel")
    array = submit_array(slurm, env, tmp_path, url, "--study", "cancel", "--n-trials", "100")
    running = lambda: len(load(url, "cancel").get_trials(states=(TrialState.RUNNING,)))  # noqa: E731
    wait_until(lambda: running() == 3, 300, "a trial in flight in each task")

    slurm.run("scancel", f"{array}_1")
    wait_until(lambda: slurm.job(f"{array}_1").get("JobState") not in ("RUNNING", "COMPLETING"), 90,
               "the cancelled task to end")
    time.sleep(3)  # a requeue would show by now
    info = slurm.job(f"{array}_1")
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", (info, _read(tmp_path / "task-1.out"))
    assert "not requeueing" in _read(tmp_path / "task-1.out")
    assert all(slurm.job(f"{array}_{i}")["JobState"] == "RUNNING" for i in (0, 2))

    slurm.run("scancel", array)
    wait_until(lambda: not slurm.run("squeue", "-h", "-j", array).stdout.strip(), 90, "the array to end")
    time.sleep(3)
    assert not slurm.run("squeue", "-h", "-j", array).stdout.strip()  # nothing came back PENDING
    for i in range(3):
        info = slurm.job(f"{array}_{i}")
        assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", (i, info)
    # Each cancelled worker re-queued its trial in flight on its way out.
    wait_until(lambda: running() == 0, 30, "no trial RUNNING")


def test_a_transient_exit_requeues_the_task_and_a_user_error_fails_it(slurm, postgres, env, tmp_path):
    """Exit 75 (the database or artifact store stayed away past --db-wait) comes back later;
    exit 1 (here a study that does not exist, from the real worker) ends the task FAILED."""
    url = postgres.new_database()
    # The worker's own exit 75 lands separately (core/settings.py EXIT_TRANSIENT): a stand-in
    # with that exit code drives the script's side of it here.
    transient = tmp_path / "transient-worker"
    transient.write_text("#!/bin/sh\necho stand-in worker exiting 75\nexit 75\n")
    transient.chmod(0o755)
    array = submit_array(slurm, env, tmp_path, url, "--study", "nope", tasks=1, search_bin=str(transient))
    wait_until(lambda: slurm.job(f"{array}_0").get("Restarts") == "1", 90, "the task to be requeued")
    assert "requeueing task" in _read(tmp_path / "task-0.out")
    slurm.run("scancel", array)

    (tmp_path / "task-0.out").unlink()
    array = submit_array(slurm, env, tmp_path, url, "--study", "nope", tasks=1)
    wait_until(lambda: slurm.job(f"{array}_0").get("JobState") in ("FAILED", "COMPLETED"), 120, "the task to end")
    info = slurm.job(f"{array}_0")
    log = _read(tmp_path / "task-0.out")
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "1:0" and info["Restarts"] == "0", (info, log)
    assert "worker exited 1" in log and "requeueing" not in log
