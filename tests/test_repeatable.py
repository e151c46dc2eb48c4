"""--seed makes a search repeatable: one worker with the same seed runs the same trials (the
sampler draws each trial from the seed and its number, the split and training are seeded, the
pruner judges the same history), while workers sharing a seed still draw apart. And the lines a
person waits on: data loading and each trial's start said at once, the timeout's stop said."""
from __future__ import annotations

import re

import optuna
from optuna.trial import TrialState

from search.definition import StudyDefinition
from tests.helpers import FIXED_SPACE, VARIED_SPACE, load, search, space_file

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _draws(study: optuna.Study, n: int) -> list[tuple[float, int]]:
    out = []
    for _ in range(n):
        t = study.ask()
        out.append((t.suggest_float("lr", 1e-3, 1.0, log=True), t.suggest_int("width", 8, 64)))
        study.tell(t, out[-1][0])
    return out


def test_a_seed_repeats_the_draws_and_workers_sharing_it_draw_apart():
    for sampler in ("tpe", "random"):
        def study(seed: int) -> optuna.Study:
            return optuna.create_study(sampler=StudyDefinition(seed=seed, sampler=sampler).make_sampler())
        assert _draws(study(5), 12) == _draws(study(5), 12), sampler  # past TPE's 10 random startup trials
        assert _draws(study(5), 3) != _draws(study(6), 3), sampler
        # Two workers on one study, the same seed: each trial has its own number, so its own draw.
        one = study(5)
        two = optuna.load_study(study_name=one.study_name, storage=one._storage,
                                sampler=StudyDefinition(seed=5, sampler=sampler).make_sampler())
        a, b = one.ask(), two.ask()
        assert a.suggest_float("lr", 1e-3, 1.0) != b.suggest_float("lr", 1e-3, 1.0), sampler


def _trials(url: str) -> list[tuple]:
    return [(t.number, t.state.name, t.params, t.value, t.intermediate_values, t.user_attrs["params"])
            for t in load(url, "again").get_trials()]


def test_one_worker_with_the_same_seed_runs_the_same_trials(env, tmp_path):
    args = ["--study", "again", "--space", space_file(tmp_path, dict(VARIED_SPACE, recipe=dict(
                VARIED_SPACE["recipe"], epochs=[2, 2]))),
            "--budget", "30000", "--val-size", "200", "--train-limit", "400", "--seed", "3", "--gpus", "none",
            "--n-trials", "4"]
    runs = []
    for name in ("first", "second"):
        url = f"sqlite:///{tmp_path / name}.db"
        out = search("run", "--storage", url, *args, env=dict(env, SEARCH_ARTIFACTS=str(tmp_path / name)), timeout=600).stdout
        runs.append((_trials(url), [re.sub(r", \d+ s ", ", ", line) for line in re.findall(r"^\[again\] trial \d+: .*", out, re.M)]))
    (trials, lines), (trials_again, lines_again) = runs
    assert trials == trials_again and lines == lines_again
    assert sum(t[1] == "COMPLETE" for t in trials) >= 1 and len(lines) >= 4, lines
    assert any(t[1] == "PRUNED" for t in trials), lines  # Hyperband acted, and acted the same both times


def test_the_worker_says_it_loads_data_starts_a_trial_and_that_the_timeout_stopped_it(env, tmp_path):
    env = dict(env, SEARCH_STORAGE=f"sqlite:///{tmp_path / 'search.db'}")
    space = dict(FIXED_SPACE, recipe=dict(FIXED_SPACE["recipe"], epochs=[1, 1]))
    out = search("run", "--study", "late", "--space", space_file(tmp_path, space), "--val-size", "200",
                 "--budget", "100000", "--gpus", "none", "--n-trials", "5", "--timeout", "1", env=env).stdout
    lines = out.splitlines()
    assert lines[0].startswith("study late: budget 100,000, 1 epoch, val 200, seed 0,"), out
    assert lines[1] == "[late] loading CIFAR-10 (200 validation images held out, seed 0)", out
    assert re.fullmatch(r"\[late\] trial 0 started: sgd_nesterov lr 0\.05, batch 64; 2 basic stages, widths 32-32; "
                        r"[\d,]+ params, 1 epoch", lines[2]), out
    assert re.search(r"^\[late\] trial 0: complete, val acc [01]\.\d{4} \(flip averaging (on|off)\), ", out, re.M), out
    assert lines[-1] == "[late] stopped by --timeout after 1 of 5 trials", out
    status = search("status", "--study", "late", env=env).stdout
    assert "a worker started again (the same command) goes on" in status, status
    assert len(load(env["SEARCH_STORAGE"], "late").get_trials(states=(TrialState.COMPLETE,))) == 1


def test_a_busy_cpu_trains_with_one_thread_unless_omp_num_threads_says(monkeypatch):
    from search.threads import busy_cpu_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert busy_cpu_threads(cpus=2, load=9.0) == 1  # others hold the cores: one thread
    assert busy_cpu_threads(cpus=2, load=1.0) is None and busy_cpu_threads(cpus=1, load=9.0) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert busy_cpu_threads(cpus=2, load=9.0) is None  # the user's choice stands
