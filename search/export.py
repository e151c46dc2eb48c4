"""`search export-best`: the best feasible trial's checkpoint as one self-contained file."""
from __future__ import annotations

from pathlib import Path

import optuna
import torch

from objectives.checkpoint import load_model
from objectives.data import load_cifar10
from objectives.train import default_device, evaluate
from optuna.artifacts.exceptions import ArtifactNotFound

from storage.artifacts import download_torch, location_of, open_artifact_store

from .progress import progress
from .trials import best_feasible


def export_best(study: optuna.Study, artifacts: str | None, out: str | Path,
                trial: optuna.trial.FrozenTrial | None = None) -> dict:
    """Write the checkpoint of `trial` (default: the best feasible trial) to `out`."""
    best = trial or best_feasible(study)
    if best is None:
        raise ValueError(f"study {study.study_name!r} has no completed trial within budget yet: nothing to export")
    artifact = best.user_attrs.get("model_artifact")
    if not artifact:
        raise ValueError(f"best trial {best.number} has no checkpoint in the study")
    store = open_artifact_store(artifacts, create=False, study=study)
    try:
        data = download_torch(store, artifact)
    except (FileNotFoundError, ArtifactNotFound):
        raise ValueError(f"checkpoint of trial {best.number} is missing from the artifact store "
                         f"{location_of(store)} (wrong --artifacts?)") from None
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, out)
    except (OSError, RuntimeError) as e:  # torch.save reports an unwritable path as RuntimeError
        raise ValueError(f"{out}: cannot write the model file ({str(e).splitlines()[0]})") from None
    return data


def test_accuracy(data: dict, data_dir: str | None, tta: bool) -> tuple[float, int]:
    """(accuracy, number of images) on the test split."""
    model, info = load_model(data)
    test = load_cifar10(data_dir).test
    norm = info["normalization"]
    with progress(len(test), "evaluating on the test set") as advance:
        result = evaluate(model, test, norm["mean"], norm["std"], default_device(), tta=tta, advance=advance)
    return result.accuracy, len(test)


class WithNormalization(torch.nn.Module):
    """The exported graph takes float32 pixels in [0, 1], N x 3 x 32 x 32, and returns
    logits: normalisation is inside, so the file runs without this package."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def deployable(data: dict) -> WithNormalization:
    model, info = load_model(data)
    norm = info["normalization"]
    return WithNormalization(model, norm["mean"], norm["std"]).eval()


def export_torchscript(data: dict, out: str | Path) -> None:
    import warnings
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream, but TorchScript files still load in every
        # PyTorch (C++ included) without Python code: what users ask this format for.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(deployable(data), torch.rand(1, 3, 32, 32))
    traced.save(str(out))


def export_onnx(data: dict, out: str | Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the torch.onnx exporter needs it)
    except ImportError:
        raise ValueError("--format onnx needs the onnx extra: pip install 'resnet-search[onnx]'") from None
    import io
    import logging
    import contextlib
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(deployable(data), (torch.rand(2, 3, 32, 32),), input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True)
    program.save(str(out))
