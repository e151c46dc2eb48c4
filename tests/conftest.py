"""Shared fixtures: the real CIFAR-10, rebuilt from ../shared by its own script.

Rebuilds are deterministic (same arguments, same bytes), so they are cached
under tests/.cache between runs; a fresh clone builds them once (~10 s full).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REBUILD = SHARED / "tools" / "cifar10_batches.py"
CACHE = REPO / "tests" / ".cache"


def rebuilt_cifar(name: str, *extra: str) -> Path:
    root = CACHE / name
    if not (root / "cifar-10-batches-py" / "test_batch").exists():
        assert REBUILD.exists(), f"{REBUILD} is missing: tests need ../shared beside the checkout"
        subprocess.run([sys.executable, str(REBUILD), str(root), *extra], check=True,
                       stdout=subprocess.DEVNULL)
    return root


@pytest.fixture(scope="session")
def cifar_full() -> Path:
    """All 50,000 + 10,000 images."""
    return rebuilt_cifar("cifar10-full")


@pytest.fixture(scope="session")
def cifar_small() -> Path:
    """100 train and 20 test images per class."""
    return rebuilt_cifar("cifar10-small", "--train-per-class", "100", "--test-per-class", "20")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for the whole session."""
    from tests.servers import PostgresServer
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def env(cifar_small, tmp_path):
    """Environment for `search` subprocesses: the small CIFAR-10, a per-test artifact store, one thread."""
    return dict(os.environ, SEARCH_DATA_DIR=str(cifar_small), SEARCH_ARTIFACTS=str(tmp_path / "artifacts"),
                OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """Each test gets a fresh database: a SQLite file, or a new database on the server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'search.db'}"
    return request.getfixturevalue("postgres").new_database()


# The fast lane, `pytest -m "not slow"`, for everyday work (README.md gives its measured time);
# CI runs everything. Slow: whole modules that start servers, schedulers or several worker
# processes, and the single tests that train through the CLI for several seconds.
SLOW_MODULES = {"test_faults", "test_slurm", "test_s3_artifacts", "test_connections", "test_service", "test_deploy",
                "test_finalize", "test_use_winner", "test_search_quality", "test_ask_cost", "test_compose_engine"}
SLOW_TESTS = {"test_learns_real_cifar10_subset", "test_sampled_counts_equal_built_models",
              "test_enqueue_with_recipe_queues_the_published_recipe",
              "test_each_epoch_prints_a_progress_line_and_quiet_keeps_trial_lines",
              "test_ctrl_c_stops_the_trial_within_seconds_and_says_how_to_exit_at_once",
              "test_finished_study_says_so_in_run_and_status",
              "test_a_clashing_definition_names_each_field_with_both_values",
              # the longest of the rest (a search trained by the CLI, runs trained twice to compare)
              "test_dashboard_serves_the_study_and_its_checkpoints",
              "test_evaluation_progress_is_plain_lines_off_a_terminal_and_a_bar_on_one",
              "test_resume_from_checkpoint_equals_uninterrupted_run", "test_seeded_cpu_runs_are_reproducible",
              "test_missing_data_names_the_path_and_three_ways_before_creating_a_study",
              "test_a_slot_started_by_hand_says_so_in_one_line", "test_nan_loss_stops_with_a_reason",
              "test_smallest_arch_is_the_minimum_over_the_whole_space_of_every_block_type",
              "test_tables_of_another_optuna_schema_are_refused_in_one_line_and_left_as_they_are",
              "test_a_study_stored_before_block_types_reruns_with_the_defaults_and_keeps_its_basic_blocks",
              "test_full_rebuilt_set",
              # resume drills: runs trained straight and again from checkpoints (1-2 min each)
              "test_killed_trial_resumes_within_k_epochs_and_dashboard_lists_only_live_files",
              "test_resume_keeps_the_best_epochs_weights_stored_once", "test_a_version_1_checkpoint_still_resumes",
              # two searches run through the CLI to compare their trials; a search stopped by its timeout
              "test_one_worker_with_the_same_seed_runs_the_same_trials",
              "test_the_worker_says_it_loads_data_starts_a_trial_and_that_the_timeout_stopped_it",
              # many models built and counted; a policy scanner per overlay; one process per bad file
              "test_count_matches_built_model_on_random_configs", "test_checkov_finds_nothing",
              "test_real_processes_print_one_line"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: left out of the fast lane (pytest -m 'not slow'); CI runs it")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
