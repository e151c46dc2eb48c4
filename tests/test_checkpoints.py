"""Resume checkpoints every K epochs: a killed trial's retry resumes from the last one and ends
with the best epoch's weights, and no artifact row (what optuna-dashboard lists) names a
removed file. In-process objective on a real SQLite storage, the real dashboard server."""
from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
import torch
from optuna.trial import TrialState

from objectives import ArchConfig
from objectives.data import load_cifar10
from objectives.prepare import prepare_data
from objectives.recipe import Recipe
from objectives.space import SearchSpace
from objectives.train import Trainer
from search.definition import StudyDefinition, create_study
from search.objective import Objective
from storage.requeue import requeue
from core.settings import WorkerOptions
from storage.artifacts import ARTIFACT_ATTR_PREFIX, download_torch, open_artifact_store
from storage.database import make_storage
from tests.helpers import BIN, FIXED_SPACE, SEARCH
from tests.servers import free_port, wait_until

EPOCHS, EVERY, KILLED_IN = 6, 3, 5  # checkpoints after epochs 3 (and 6 is the last): killed in 5


class Killed(Exception):
    """The worker dies between two epochs (no checkpoint, no clean-up)."""


def artifact_rows(storage, study) -> dict[int, dict[str, object]]:
    """trial number -> {artifact id: metadata} as the database holds them (nulls included)."""
    raw = storage._backend if hasattr(storage, "_backend") else storage
    return {t.number: {k[len(ARTIFACT_ATTR_PREFIX):]: json.loads(v) for k, v in t.system_attrs.items()
                       if k.startswith(ARTIFACT_ATTR_PREFIX)}
            for t in raw.get_all_trials(study._study_id)}


def test_killed_trial_resumes_within_k_epochs_and_dashboard_lists_only_live_files(cifar_small, tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    storage = make_storage(url)
    space = SearchSpace.from_dict({"arch": FIXED_SPACE["arch"],
                                   "recipe": {**FIXED_SPACE["recipe"], "epochs": [EPOCHS, EPOCHS]}})
    definition = StudyDefinition(space=space, val_size=200, train_limit=256, pruner="none")
    study = create_study(storage, "ckpt", definition)
    data = prepare_data(load_cifar10(cifar_small, download_missing=False), 200, 0, 256)
    artifacts = tmp_path / "artifacts"
    store = open_artifact_store(str(artifacts), study=study)
    seen_checkpoints: list[int] = []

    def progress(number, epoch, epochs, metrics, seconds, run_epochs):
        if number == 0 and epoch == KILLED_IN:
            seen_checkpoints.append(study.trials[0].user_attrs["resume_checkpoint"]["epoch"])
            raise Killed(f"killed after epoch {epoch}")

    objective = Objective(definition, data, torch.device("cpu"), store, "ckpt", on_epoch=progress,
                          checkpoint_every=EVERY)
    with pytest.raises(Killed):
        study.optimize(objective, n_trials=1)
    killed = study.trials[0]
    assert killed.state == TrialState.FAIL and seen_checkpoints == [EVERY]  # none after epoch 4
    retry = requeue(study, killed)
    study.optimize(objective, n_trials=1)
    retry = study.trials[retry.number]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_epoch"] == EVERY  # went back KILLED_IN - EVERY = K-1 epochs
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))

    # The retry's model is the best epoch of the run as if it had never been killed.
    arch, recipe = ArchConfig.from_dict(retry.user_attrs["architecture"]), Recipe.from_dict(retry.user_attrs["recipe"])
    straight = Trainer(arch, recipe, data, seed=definition.seed + killed.number).run()
    model = download_torch(store, retry.user_attrs["model_artifact"])
    assert model["metrics"]["best_epoch"] == straight.best_epoch
    assert all(torch.equal(model["state_dict"][k], straight.best_state[k]) for k in straight.best_state)

    # Every row names a file that exists; the removed checkpoints left no rows, nulls included.
    rows = artifact_rows(storage, study)
    files = {p.name for p in artifacts.iterdir()}
    assert rows == {killed.number: {}, retry.number: {retry.user_attrs["model_artifact"]: rows[retry.number][
        retry.user_attrs["model_artifact"]]}}, rows
    assert files == {retry.user_attrs["model_artifact"]}, files

    # optuna-dashboard lists what the rows say: the model file only, and serves it.
    port = free_port()
    proc = subprocess.Popen([str(BIN / "optuna-dashboard"), "--host", "127.0.0.1", "--port", str(port),
                             "--artifact-dir", str(artifacts), url],
                            stdout=(tmp_path / "dashboard.log").open("w"), stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"

        def detail():
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                return json.loads(urllib.request.urlopen(f"{base}/api/studies/{study._study_id}", timeout=10).read())
            except OSError:
                return None
        listed = {t["number"]: [a["filename"] for a in t["artifacts"]] for t in wait_until(detail, 60, "the dashboard")["trials"]}
        assert listed == {killed.number: [], retry.number: ["model.pt"]}, listed
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_checkpoint_every_flag_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("SEARCH_CHECKPOINT_EVERY", raising=False)
    assert WorkerOptions("s", "sqlite:///x.db").checkpoint_every == 1
    monkeypatch.setenv("SEARCH_CHECKPOINT_EVERY", "5")
    assert WorkerOptions("s", "sqlite:///x.db").checkpoint_every == 5
    assert WorkerOptions("s", "sqlite:///x.db", checkpoint_every=2).checkpoint_every == 2


@pytest.mark.parametrize("flag, variable, message", [
    (["--checkpoint-every", "0"], None, "argument --checkpoint-every: must be positive, got 0"),
    ([], "two", "$SEARCH_CHECKPOINT_EVERY: not an integer: 'two'"),
])
def test_bad_checkpoint_every_is_one_line(tmp_path, flag, variable, message):
    env = {k: v for k, v in __import__("os").environ.items() if k != "SEARCH_CHECKPOINT_EVERY"}
    if variable is not None:
        env["SEARCH_CHECKPOINT_EVERY"] = variable
    proc = subprocess.run([SEARCH, "worker", "--study", "s", "--storage", f"sqlite:///{tmp_path / 'none.db'}", *flag],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) in (1, 2), proc.stderr
