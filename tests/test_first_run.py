"""What a new user sees: progress per epoch, the target and its ETA, answers that say what
to do (missing data, a clashing study definition), the dashboard command and the help."""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import optuna
import pytest
import torch

from search.cli import build_parser
from tests.servers import free_port, wait_until
from tests.helpers import FIXED_SPACE, SEARCH, VARIED_SPACE, search, space_file
optuna.logging.set_verbosity(optuna.logging.WARNING)

EPOCH_LINE = re.compile(r"^\[first\] trial (\d+) epoch (\d)/3: train loss \d+\.\d{3}, val acc [01]\.\d{4}, "
                        r"\d+ img/s, trial ETA (\d+ s|done)$", re.M)


@pytest.fixture(scope="module")
def first_study(cifar_small, tmp_path_factory):
    """A finished 2-trial study, run as a user would; the run's output is kept."""
    root = tmp_path_factory.mktemp("first")
    env = dict(os.environ, SEARCH_DATA_DIR=str(cifar_small), SEARCH_STORAGE=f"sqlite:///{root / 'search.db'}",
               SEARCH_ARTIFACTS=str(root / "artifacts"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    space = dict(VARIED_SPACE, recipe=dict(VARIED_SPACE["recipe"], optimizers=["sgd_nesterov"]))
    args = ["--study", "first", "--space", space_file(root, space), "--val-size", "200", "--budget", "30000",
            "--pruner", "none", "--gpus", "none", "--n-trials", "2"]
    run = search("run", *args, env=env)
    return root, env, args, run.stdout


def test_each_epoch_prints_a_progress_line_and_quiet_keeps_trial_lines(first_study, tmp_path):
    root, env, args, out = first_study
    lines = EPOCH_LINE.findall(out)
    assert [(t, e) for t, e, _ in lines] == [("0", "1"), ("0", "2"), ("0", "3"), ("1", "1"), ("1", "2"), ("1", "3")], out
    assert [eta for *_, eta in lines][2::3] == ["done", "done"] and all(eta.endswith(" s") for *_, eta in lines[:2])
    assert re.search(r"^\[first\] trial 1: complete, val acc", out, re.M), out

    quiet_env = dict(env, SEARCH_STORAGE=f"sqlite:///{tmp_path / 'quiet.db'}")
    quiet = search("run", *args[:-1], "1", "--epochs", "1", "--quiet", env=quiet_env).stdout
    assert not re.search(r"trial \d+ epoch", quiet) and re.search(r"^\[first\] trial 0: complete, val acc", quiet, re.M), quiet


def test_finished_study_says_so_in_run_and_status(first_study):
    root, env, args, _ = first_study
    again = search("run", *args, env=env)
    assert "first: 2/2 trained trials; nothing to do: raise --n-trials" in again.stdout
    assert "trial 2" not in again.stdout  # and it trained nothing more
    status = search("status", "--study", "first", env=env).stdout
    assert "target: 2/2 trained trials; nothing to do: raise --n-trials" in status, status
    spent = re.search(r"time spent: complete (\d+) s", status)
    assert spent and int(spent.group(1)) > 0, status
    from search.status import summarize
    summary = summarize(optuna.load_study(study_name="first", storage=env["SEARCH_STORAGE"]))
    assert summary["progress"]["target"] == 2 and summary["progress"]["reached"]
    assert summary["seconds_by_state"]["complete"] > 0


def _trial(start: dt.datetime, seconds: float, state=optuna.trial.TrialState.COMPLETE):
    t = optuna.trial.create_trial(state=state, value=0.5 if state == optuna.trial.TrialState.COMPLETE else None,
                                  intermediate_values={1: 0.4} if state == optuna.trial.TrialState.PRUNED else None)
    t.datetime_start, t.datetime_complete = start, start + dt.timedelta(seconds=seconds)
    return t


def test_eta_to_the_target_and_to_the_timeout_follow_the_measured_rate():
    from search.eta import DEADLINE_ATTR, TARGET_ATTR, progress_to_target, time_by_state
    from search.status import summarize
    study = optuna.create_study(direction="maximize")
    start = dt.datetime.now() - dt.timedelta(hours=1)
    # 4 trained trials in one hour (starting every 15 minutes, the last ending at the hour): 4 per hour.
    for i, state in enumerate([optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED] * 2):
        study.add_trial(_trial(start + dt.timedelta(minutes=15 * i), 600 if i < 3 else 900, state))
    study.set_user_attr(TARGET_ATTR, 10)
    p = summarize(study)["progress"]
    assert p["trained"] == 4 and p["eta_of"] == "target"
    assert p["eta_seconds"] == pytest.approx(6 / 4 * 3600, rel=0.02)  # 6 to go at 4 per hour
    study.set_user_attr(DEADLINE_ATTR, (dt.datetime.now() + dt.timedelta(minutes=30)).isoformat(timespec="seconds"))
    p = summarize(study)["progress"]
    assert p["eta_of"] == "timeout" and p["eta_seconds"] == pytest.approx(1800, abs=5)  # the sooner of the two
    assert progress_to_target(study, 10, 4.0)["reached"]
    spent = time_by_state(study.get_trials())
    assert spent["complete"] == pytest.approx(600 + 600, abs=1) and spent["pruned"] > 0


def test_missing_data_names_the_path_and_three_ways_before_creating_a_study(tmp_path):
    empty = tmp_path / "no-data-here"
    db = tmp_path / "search.db"
    # No network in tests: a proxy on a closed port makes the download fail at once, as offline.
    env = dict(os.environ, https_proxy=f"http://127.0.0.1:{free_port()}", http_proxy=f"http://127.0.0.1:{free_port()}",
               SEARCH_STORAGE=f"sqlite:///{db}")
    env.pop("SEARCH_DATA_DIR", None)
    proc = search("run", "--study", "nodata", "--data-dir", str(empty), "--n-trials", "1", env=env, check=False,
                  timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"no CIFAR-10 in {empty.resolve()}" in line
    assert "--data-dir" in line and "$SEARCH_DATA_DIR" in line and "search prepare-data" in line
    if db.exists():  # nothing was created: no study in the file
        assert optuna.get_all_study_names(f"sqlite:///{db}") == []


def test_a_clashing_definition_names_each_field_with_both_values(tmp_path, cifar_small):
    env = dict(os.environ, SEARCH_STORAGE=f"sqlite:///{tmp_path / 'search.db'}")
    search("create", "--study", "s", "--budget", "30000", "--epochs", "3", env=env)
    clash = search("create", "--study", "s", "--budget", "40000", "--epochs", "5", env=env, check=False)
    (line,) = clash.stderr.strip().splitlines()
    assert clash.returncode == 1 and "different definition" in line
    assert "budget: stored 30000, given 40000" in line
    assert "space.recipe.epochs: stored [3, 3], given [5, 5]" in line
    assert "val_size" not in line and "pruner" not in line  # only what differs


def test_dashboard_serves_the_study_and_its_checkpoints(first_study):
    root, env, _, _ = first_study
    port = free_port()
    proc = subprocess.Popen([SEARCH, "dashboard", "--study", "first", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first_line = proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        assert re.search(rf"{base}/dashboard/studies/\d+", first_line), first_line

        def answer():
            assert proc.poll() is None, "the dashboard exited"
            try:
                return json.loads(urllib.request.urlopen(base + "/api/studies", timeout=5).read())["study_summaries"]
            except OSError:
                return None
        studies = wait_until(answer, 60, "the dashboard's API")
        (study,) = [s for s in studies if s["study_name"] == "first"]
        trials = json.loads(urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=10).read())["trials"]
        t = next(t for t in trials if t["artifacts"])
        artifact = t["artifacts"][0]
        with urllib.request.urlopen(f"{base}/artifacts/{study['study_id']}/{t['trial_id']}/{artifact['artifact_id']}",
                                    timeout=30) as r:
            assert r.status == 200
            model_file = torch.load(io.BytesIO(r.read()), weights_only=True)
        assert model_file["study"] == "first" and model_file["trial"] == t["number"]
        # Each trial's architecture and recipe as a line a person reads, beside the JSON ones.
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert re.fullmatch(r"\d stages: \dx\d+ basic F\d K\d, .*; stem \dx\d; pool \d+; (relu|silu)(; .*)?",
                            attrs["architecture (readable)"]), attrs
        assert attrs["recipe (readable)"].startswith("sgd_nesterov lr ") and "flip averaging" in attrs["recipe (readable)"]
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=10)[0]
    assert "GET /" not in rest, rest  # no line per request unless --verbose

    port = free_port()
    proc = subprocess.Popen([SEARCH, "dashboard", "--study", "first", "--port", str(port), "--verbose"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        proc.stdout.readline()
        def answers() -> bool:
            assert proc.poll() is None, "the dashboard exited"
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).status == 200
            except OSError:
                return False
        wait_until(answers, 60, "the verbose dashboard")
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=10)[0]
    assert "GET /api/studies" in rest, rest


def test_evaluation_progress_is_plain_lines_off_a_terminal_and_a_bar_on_one(first_study, tmp_path, monkeypatch):
    root, env, _, _ = first_study
    out = tmp_path / "best.pt"
    proc = search("export-best", "--study", "first", "--out", str(out), "--evaluate", env=env)
    assert "evaluating on the test set: 200 img" in proc.stderr  # the small test split, said up front
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ") and "flip averaging" in last
    # the same figure as `search evaluate` of the same file: both follow the recipe's flip averaging
    evaluated = json.loads(search("evaluate", str(out), "--json", env=env).stdout)
    assert last.startswith(f"test accuracy: {evaluated['accuracy']:.4f} ")
    assert f"flip averaging {'on' if evaluated['tta'] else 'off'} (as its recipe)" in last

    import search.progress as progress_mod
    plain = io.StringIO()
    monkeypatch.setattr(progress_mod, "PLAIN_EVERY_SECONDS", 0.0)
    with progress_mod.progress(300, "predicting", out=plain) as advance:
        for _ in range(3):
            advance(100)
    assert plain.getvalue().splitlines() == ["predicting: 300 img", "predicting: 100/300 img (33%)",
                                             "predicting: 200/300 img (67%)"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True
    term = Terminal()
    with progress_mod.progress(300, "predicting", out=term) as advance:
        advance(300)
    assert re.search(r"^\rpredicting: +0%\|", term.getvalue())  # tqdm's bar, redrawn in place


def _subcommands(parser: argparse.ArgumentParser):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(choice.dest, choice.help, sub.choices[choice.dest]) for choice in sub._choices_actions]


def test_every_command_and_option_is_described_with_its_default():
    parser = build_parser()
    commands = _subcommands(parser)
    assert {"run", "status", "dashboard", "export-best", "evaluate", "predict"} <= {name for name, *_ in commands}
    for name, summary, command in commands:
        assert summary and "\n" not in summary and command.description, name
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings or action.dest)
            if action.option_strings and not action.required:  # every option says what happens without it
                assert "default" in action.help or "required" in action.help, (name, action.option_strings)
    shown = subprocess.run([SEARCH, "--help"], capture_output=True, text=True, check=True).stdout
    assert "examples:" in shown and "search run --study demo" in shown
    version = subprocess.run([SEARCH, "--version"], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"search \(resnet-search\) \d+\.\d+\.\d+\n", version)


def test_readme_demo_command_parses_and_is_a_real_search():
    from tests.helpers import REPO, readme_commands
    main_job = readme_commands()[0]
    run = main_job.split(" && ")[1].split()
    assert run[0] == ".venv/bin/search"
    args = build_parser().parse_args(run[1:])
    from objectives.space import SearchSpace
    space = SearchSpace.from_json((REPO / args.space).read_text())  # the file ships and loads
    assert args.n_trials >= 4 and args.pruner == "hyperband" and args.epochs >= 2  # pruning can act
    assert len(space.recipe.optimizers) > 1 and space.arch.channels[0] < space.arch.channels[-1]


def test_ctrl_c_stops_the_trial_within_seconds_and_says_how_to_exit_at_once(env, tmp_path):
    env = dict(env, SEARCH_STORAGE=f"sqlite:///{tmp_path / 'search.db'}")
    space = dict(FIXED_SPACE, recipe=dict(FIXED_SPACE["recipe"], epochs=[300, 300]))
    proc = subprocess.Popen([SEARCH, "run", "--study", "stop", "--space", space_file(tmp_path, space), "--val-size", "200",
                             "--budget", "100000", "--gpus", "none", "--n-trials", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if "epoch 1/300" in line:
            break
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    sent = time.monotonic()
    rest = proc.communicate(timeout=120)[0]
    waited = time.monotonic() - sent
    assert proc.returncode == 130, "".join(lines) + rest  # 128 + SIGINT: interrupted, as a shell reports it
    assert "press Ctrl-C again to exit at once" in rest and "interrupted, re-queued to resume" in rest, rest
    assert waited < 60, waited  # a training step, the re-queue and the exit; not the 299 epochs left


def test_trial_line_says_what_the_sampler_chose_including_block_types():
    from search.progress import describe_config
    from core.trials import ARCHITECTURE_ATTR, RECIPE_ATTR
    from objectives import ArchConfig, StageConfig
    arch = ArchConfig(stages=(StageConfig(1, 32, block="bottleneck"), StageConfig(1, 64, block="preact"),
                              StageConfig(1, 128, block="bottleneck")), pool_kernel=8).to_dict()
    line = describe_config({RECIPE_ATTR: {"optimizer": "adamw", "lr": 0.00213, "batch_size": 256}, ARCHITECTURE_ATTR: arch})
    assert line == "adamw lr 0.00213, batch 256; 3 bottleneck/preact stages, widths 32-128"
    arch = ArchConfig(stages=(StageConfig(1, 16),), pool_kernel=32).to_dict()
    del arch["stages"][0]["block"]  # stored before block types: basic
    assert describe_config({RECIPE_ATTR: {"optimizer": "sgd", "lr": 0.1, "batch_size": 64},
                            ARCHITECTURE_ATTR: arch}).endswith("1 basic stage, widths 16-16")
    assert describe_config({}) == ""
