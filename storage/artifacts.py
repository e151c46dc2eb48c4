"""Per-trial files (checkpoints) in Optuna's artifact store, visible in optuna-dashboard."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

ARTIFACTS_ENV = "SEARCH_ARTIFACTS"
DEFAULT_ARTIFACTS = "artifacts"
ARTIFACT_ATTR_PREFIX = "artifacts:"  # where Optuna records an artifact's metadata on its trial


def resolve_artifact_dir(flag: str | None = None) -> Path:
    return Path(flag or os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS).expanduser()


def open_artifact_store(flag: str | None = None, create: bool = True) -> FileSystemArtifactStore:
    path = resolve_artifact_dir(flag)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.is_dir():
        raise ValueError(f"artifact directory {path} does not exist (set --artifacts or ${ARTIFACTS_ENV})")
    return FileSystemArtifactStore(str(path))


def upload_torch(store, trial: optuna.Trial | optuna.trial.FrozenTrial, obj: dict[str, Any], filename: str,
                 storage=None) -> str:
    """torch.save `obj` under `filename` and upload it to `trial`; returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        torch.save(obj, path)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                               storage=storage, mimetype="application/octet-stream")


def download_torch(store, artifact_id: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "artifact.pt"
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        return torch.load(path, weights_only=True, map_location="cpu")


def remove_artifact(store, storage: optuna.storages.BaseStorage, trial_id: int, artifact_id: str) -> None:
    """Delete a superseded artifact the way optuna-dashboard does: the file, then its
    metadata set to null so the dashboard stops listing it."""
    try:
        store.remove(artifact_id)
    except Exception:  # already gone (another process cleaned up): nothing to free
        pass
    storage.set_trial_system_attr(trial_id, ARTIFACT_ATTR_PREFIX + artifact_id, json.dumps(None))
