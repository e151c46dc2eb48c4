"""`search export-best`: the best feasible trial's checkpoint as one self-contained file."""
from __future__ import annotations

from pathlib import Path

import optuna
import torch

from objectives.checkpoint import load_model
from objectives.data import load_cifar10
from objectives.train import evaluate
from storage.artifacts import download_torch, open_artifact_store

from .status import best_feasible


def export_best(study: optuna.Study, artifacts: str | None, out: str | Path) -> dict:
    best = best_feasible(study)
    if best is None:
        raise ValueError(f"study {study.study_name!r} has no completed trial within budget yet: nothing to export")
    artifact = best.user_attrs.get("model_artifact")
    if not artifact:
        raise ValueError(f"best trial {best.number} has no checkpoint in the study")
    store = open_artifact_store(artifacts, create=False)
    try:
        data = download_torch(store, artifact)
    except FileNotFoundError:
        raise ValueError(f"checkpoint of trial {best.number} is missing from the artifact store "
                         f"(wrong --artifacts directory?)") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, out)
    return data


def test_accuracy(data: dict, data_dir: str | None, tta: bool) -> float:
    model, info = load_model(data)
    cifar = load_cifar10(data_dir)
    norm = info["normalization"]
    return evaluate(model, cifar.test, norm["mean"], norm["std"], "cuda" if torch.cuda.is_available() else "cpu",
                    tta=tta).accuracy
