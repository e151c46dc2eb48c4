"""The `search` command as a user runs it: installed console script, exit codes, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from objectives import PRESETS, count_params
from tests import helpers
from tests.helpers import SEARCH, search


def run(*args, check=False):
    return search(*args, env=dict(os.environ), check=check, timeout=120)


def test_help_lists_commands():
    out = run("--help", check=True).stdout
    import re
    # Each command on its own line of the command list (not just a word of the description).
    for name in ("presets", "arch", "space", "create", "run", "worker", "status", "enqueue", "export-best",
                 "evaluate", "predict", "report"):
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), name
    assert subprocess.run([sys.executable, "-m", "search", "--help"], capture_output=True).returncode == 0


def test_presets_table():
    out = run("presets", check=True).stdout
    for name, arch in PRESETS.items():
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert f"{count_params(arch):,}" in line
        assert line.rstrip().endswith("NO" if name == "resnet18-kuangliu" else "yes")


def test_presets_json_and_budget_flag():
    rows = json.loads(run("presets", "--json", "--budget", "4,800,000", check=True).stdout)["presets"]
    within = {r["name"]: r["within_budget"] for r in rows}
    assert within == {"resnet24-steroids": False, "resnet9-kuangliu": False, "se-resnet-rawat": True,
                      "resnet-nightshade": True, "resnet20-he": True, "resnet18-kuangliu": False}


def one_line_error(proc):
    return helpers.one_line_error(proc, code=None)  # usage errors exit 2, bad values 1


def test_over_budget_arch_exits_1_with_count_and_budget():
    line = one_line_error(run("arch", "--preset", "resnet18-kuangliu"))
    assert "11,173,962" in line and "5,000,000" in line


def test_arch_file_round_trip_and_invalid_file(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps(PRESETS["resnet-nightshade"].to_dict()))
    assert json.loads(run("arch", "--file", str(good), check=True).stdout)["params"] == 4_709_914
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"stages": [{"blocks": 1, "channels": 16}], "pool_kernel": 5}))
    assert "pool_kernel" in one_line_error(run("arch", "--file", str(bad)))
    assert "cannot read" in one_line_error(run("arch", "--file", str(tmp_path / "none.json")))
    assert "unknown preset" in one_line_error(run("arch", "--preset", "vgg"))


@pytest.mark.parametrize("args", [["presets", "--budget", "lots"], ["nosuch"], []])
def test_usage_errors_exit_2(args):
    proc = run(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_pruner_or_sampler_is_one_registry_entry(monkeypatch):
    """An entry added to the registry is a --pruner/--sampler choice, passes the study
    definition's check and builds its object; a name outside the registry is refused."""
    import optuna
    from search import strategies
    from search.cli import build_parser
    from search.definition import StudyDefinition
    monkeypatch.setitem(strategies.PRUNERS, "percentile",
                        lambda d: optuna.pruners.PercentilePruner(25.0, n_warmup_steps=d.epochs // 2))
    monkeypatch.setitem(strategies.SAMPLERS, "nsga2", lambda d: optuna.samplers.NSGAIISampler(seed=d.seed))
    args = build_parser().parse_args(["create", "--study", "s", "--pruner", "percentile", "--sampler", "nsga2"])
    definition = StudyDefinition(pruner=args.pruner, sampler=args.sampler, seed=7)
    assert isinstance(definition.make_pruner(), optuna.pruners.PercentilePruner)
    assert isinstance(definition.make_sampler(), optuna.samplers.NSGAIISampler)
    monkeypatch.delitem(strategies.PRUNERS, "median")
    with pytest.raises(ValueError, match="pruner: must be one of hyperband, none, percentile, got 'median'"):
        StudyDefinition(pruner="median")


def test_unknown_pruner_or_sampler_is_one_line_listing_the_choices():
    for flag, name in (("--pruner", "asha"), ("--sampler", "cmaes")):
        line = one_line_error(run("create", "--study", "s", flag, name))
        assert name in line and flag in line and ("hyperband" in line or "tpe" in line)


def test_settings_flag_beats_environment_beats_default(monkeypatch, tmp_path):
    from core import settings
    from search.cli import build_parser

    def resolved(*argv):
        return settings.resolve(build_parser().parse_args(list(argv)))
    for name in (settings.STORAGE_ENV, settings.ARTIFACTS_ENV, settings.DATA_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    worker = resolved("worker", "--study", "s")
    assert (worker.storage, worker.artifacts, worker.data_dir, worker.db_wait, worker.heartbeat, worker.grace) == \
        ("sqlite:///search.db", None, "data", 60.0, 20, 60)
    assert resolved("status", "--study", "s").db_wait == 3.0  # a person waits seconds, a worker a minute
    monkeypatch.setenv(settings.STORAGE_ENV, "sqlite:///env.db")
    monkeypatch.setenv(settings.ARTIFACTS_ENV, "s3://bucket/env")
    monkeypatch.setenv(settings.DATA_DIR_ENV, str(tmp_path / "env-data"))
    env = resolved("run", "--study", "s")
    assert (env.storage, env.artifacts, env.data_dir) == ("sqlite:///env.db", "s3://bucket/env", str(tmp_path / "env-data"))
    flags = resolved("worker", "--study", "s", "--storage", "sqlite:///flag.db", "--artifacts", "flag-dir",
                     "--data-dir", "flag-data", "--db-wait", "5")
    assert (flags.storage, flags.artifacts, flags.data_dir, flags.db_wait) == ("sqlite:///flag.db", "flag-dir",
                                                                              "flag-data", 5.0)


def test_worker_options_reach_a_slot_whole():
    """Every worker option given on the command line is what a slot process reads back."""
    import dataclasses
    from search.cli import build_parser
    from core.options import from_json, to_json
    from core.settings import WorkerOptions, resolve
    argv = ["worker", "--study", "s", "--storage", "postgresql+psycopg2://u:pw@h/db", "--db-wait", "9",
            "--data-dir", "/d", "--artifacts", "s3://b/p", "--gpus", "none", "--per-gpu", "2", "--n-trials", "3",
            "--timeout", "99.5", "--heartbeat", "7", "--grace", "30", "--compile", "--quiet", "--store-wait", "11",
            "--checkpoint-every", "4"]
    opts = WorkerOptions.from_args(resolve(build_parser().parse_args(argv)))
    defaults = WorkerOptions(study="s", storage="sqlite:///x.db")
    changed = {f.name for f in dataclasses.fields(opts) if getattr(opts, f.name) != getattr(defaults, f.name)}
    assert changed == {f.name for f in dataclasses.fields(opts)} - {"study"}  # each option set by its flag
    assert from_json(WorkerOptions, to_json(opts)) == opts


def test_help_shows_the_declared_defaults():
    from core import settings
    from search import strategies
    create = run("create", "--help", check=True).stdout
    for text in (f"{settings.DEFAULT_BUDGET:,}", f"(default {settings.DEFAULT_VAL_SIZE})",
                 f"(default {strategies.DEFAULT_PRUNER})", f"(default {strategies.DEFAULT_SAMPLER})"):
        assert text in " ".join(create.split()), text
    worker = " ".join(run("worker", "--help", check=True).stdout.split())
    assert f"(default {settings.DEFAULT_HEARTBEAT})" in worker and f"(default {settings.DEFAULT_GRACE})" in worker
    for env, default in ((settings.STORAGE_ENV, settings.DEFAULT_STORAGE), (settings.DATA_DIR_ENV, settings.DEFAULT_DATA_DIR),
                         (settings.ARTIFACTS_ENV, settings.DEFAULT_ARTIFACTS)):
        assert f"${env}, else " in worker and default in worker, env


def test_tables_of_another_optuna_schema_are_refused_in_one_line_and_left_as_they_are(tmp_path):
    import sqlite3
    db = tmp_path / "search.db"
    url = f"sqlite:///{db}"
    subprocess.run([SEARCH, "create", "--study", "s", "--storage", url, "--budget", "300000"], check=True,
                   capture_output=True)
    with sqlite3.connect(db) as c:  # as an older Optuna would have left it
        c.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    before = db.read_bytes()
    proc = subprocess.run([SEARCH, "status", "--study", "s", "--storage", url], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "schema version v3.0.0.d" in line and "optuna storage upgrade" in line
    assert db.read_bytes() == before


def test_a_study_stored_before_block_types_reruns_with_the_defaults_and_keeps_its_basic_blocks(tmp_path):
    import optuna
    from search.definition import DEFINITION_ATTR
    url = f"sqlite:///{tmp_path / 'search.db'}"
    args = ("--study", "s", "--storage", url, "--train-limit", "200", "--epochs", "1")
    assert run("create", *args).returncode == 0
    study = optuna.load_study(study_name="s", storage=url)
    old = study.user_attrs[DEFINITION_ATTR]
    del old["space"]["arch"]["block_types"]  # as every study stored before block types existed
    study.set_user_attr(DEFINITION_ATTR, old)
    assert run("create", *args).returncode == 0  # the same study after an upgrade, not a clash
    from search.definition import load_study
    _, definition = load_study(url, "s")
    assert definition.space.arch.block_types == ("basic",)
    # a block type asked for on purpose still clashes
    (tmp_path / "space.json").write_text(json.dumps({"arch": {"block_types": ["preact"]}}))
    proc = run("create", *args, "--space", str(tmp_path / "space.json"))
    assert proc.returncode == 1 and "space.arch.block_types: stored null" in proc.stderr


@pytest.mark.parametrize("argv, options, code", [
    ([], None, 2), (["cpu"], None, 2), (["gpu"], '{"study": "d"}', 2),
    (["cpu"], '{"study": "d"}', 1), (["cpu"], "[1", 1),
])
def test_a_slot_started_by_hand_says_so_in_one_line(argv, options, code):
    import os
    env = {k: v for k, v in os.environ.items() if k != "SEARCH_WORKER_OPTIONS"}
    if options is not None:
        env["SEARCH_WORKER_OPTIONS"] = options
    proc = subprocess.run([sys.executable, "-m", "search.slot", *argv], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == code and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_dashboard_names_the_metric_a_trial_value_is():
    """optuna-dashboard and Optuna's plots label the objective from the study's metric name."""
    import dataclasses
    import optuna
    from search.definition import StudyDefinition, create_study
    storage = optuna.storages.InMemoryStorage()
    search_def = StudyDefinition()
    assert create_study(storage, "s", search_def).metric_names == ["validation accuracy"]
    final_def = dataclasses.replace(search_def, final={"source": "s", "full_train": False, "seeds": 1,
                                                       "source_trials": [0]})
    assert create_study(storage, "s.final", final_def).metric_names == ["test accuracy (final run)"]
