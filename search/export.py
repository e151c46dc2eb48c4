"""`search export-best`: the best feasible trial's model in one of the export formats.

Every export writes the model file (objectives/checkpoint.py); a portable format also
writes its graph, which takes float32 pixels in [0, 1], N x 3 x 32 x 32, and returns
logits, normalisation inside (objectives.inference.Classifier), so it runs without this
package. Adding a format is one writer and one `EXPORT_FORMATS` entry, here: the CLI's
`--format` choices, help and dispatch come from the registry.

The heavy imports (torch, optuna) are made inside the functions: the CLI reads the
registry to build its parser, and `search --help` should not wait for PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import optuna


def write_torchscript(data: dict[str, Any], out: Path) -> None:
    import warnings

    import torch
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream, but TorchScript files still load in every
        # PyTorch (C++ included) without Python code: what users ask this format for.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(_classifier(data), torch.rand(1, 3, 32, 32))
    traced.save(str(out))


def write_onnx(data: dict[str, Any], out: Path) -> None:
    import contextlib
    import io
    import logging

    import torch
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(_classifier(data), (torch.rand(2, 3, 32, 32),), input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True)
    program.save(str(out))


@dataclass(frozen=True)
class ExportFormat:
    # (model file dict, path) -> the exported file; None: the export is the model file itself
    write: Callable[[dict[str, Any], Path], None] | None
    suffix: str                 # the file name's usual ending, shown in --format's help
    help: str
    extra: str | None = None    # the optional pip extra (pyproject.toml) it needs, if any ...
    needs: tuple[str, ...] = ()  # ... and the modules of it that must import, checked before anything is written


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "checkpoint": ExportFormat(None, ".pt", "the model file, a dict that torch.load(FILE, weights_only=True) reads"),
    "torchscript": ExportFormat(write_torchscript, ".ts", "a TorchScript graph for torch.jit.load (Python or C++)"),
    # onnxscript: the torch.onnx exporter needs it
    "onnx": ExportFormat(write_onnx, ".onnx", "an ONNX graph (onnxruntime and others)", "onnx", ("onnxscript",)),
}
DEFAULT_FORMAT = "checkpoint"


def format_help() -> str:
    """`--format`'s help, one clause per registered format."""
    return ("; ".join(f"{name} ({f.suffix}): {f.help}" for name, f in EXPORT_FORMATS.items()) +
            ". A graph takes float32 pixels in [0, 1], N x 3 x 32 x 32, returns logits and runs without this "
            f"package; its model file is written beside it as .pt (default {DEFAULT_FORMAT})")


def get_format(name: str) -> ExportFormat:
    """The registered format `name`, once what it needs imports; a ValueError otherwise."""
    try:
        fmt = EXPORT_FORMATS[name]
    except KeyError:
        raise ValueError(f"--format: unknown export format {name!r}; known: {', '.join(EXPORT_FORMATS)}") from None
    import importlib.util
    if any(importlib.util.find_spec(module) is None for module in fmt.needs):
        raise ValueError(f"--format {name} needs the {fmt.extra} extra: pip install 'resnet-search[{fmt.extra}]'")
    return fmt


def model_file_beside(out: Path) -> Path:
    """Where a graph's model file goes: its name with .pt, or with .checkpoint.pt if it already ends in .pt."""
    beside = out.with_suffix(".pt")
    return beside if beside != out else out.with_name(out.name + ".checkpoint.pt")


def export_best(study: optuna.Study, artifacts: str | None, out: str | Path, format_name: str = DEFAULT_FORMAT,
                trial: optuna.trial.FrozenTrial | None = None, force: bool = False) -> tuple[dict[str, Any], Path]:
    """Export `trial` (default: the best feasible trial) to `out` in `format`; returns (the model
    file's dict, where the model file was written: `out` itself for `checkpoint`). `out` must be
    in a folder that exists; a file there is replaced only with `force`."""
    from core.options import output_file
    fmt = get_format(format_name)  # before anything is downloaded or written
    out = output_file(out, force, "model file" if fmt.write is None else f"{format_name} file")
    checkpoint = out if fmt.write is None else output_file(model_file_beside(out), force, "model file")
    data = download_model(study, artifacts, trial)
    _save(data, checkpoint)
    if fmt.write is not None:
        fmt.write(data, out)
    return data, checkpoint


def download_model(study: optuna.Study, artifacts: str | None,
                   trial: optuna.trial.FrozenTrial | None = None) -> dict[str, Any]:
    """The model file of `trial` (default: the best feasible trial) from the study's artifact store."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    from storage.artifacts import download_torch, location_of, open_artifact_store

    from core.trials import MODEL_ARTIFACT_ATTR, best_feasible
    best = trial or best_feasible(study)
    if best is None:
        raise ValueError(f"study {study.study_name!r} has no completed trial within budget yet: nothing to export")
    artifact = best.user_attrs.get(MODEL_ARTIFACT_ATTR)
    if not artifact:
        raise ValueError(f"best trial {best.number} has no checkpoint in the study")
    store = open_artifact_store(artifacts, create=False, study=study)
    try:
        return download_torch(store, artifact)
    except (FileNotFoundError, ArtifactNotFound):
        raise ValueError(f"checkpoint of trial {best.number} is missing from the artifact store "
                         f"{location_of(store)} (wrong --artifacts?)") from None
    except ValueError as e:  # a damaged file
        raise ValueError(f"checkpoint of trial {best.number}: {e}") from None


def test_accuracy(data: dict[str, Any], data_dir: str | None, tta: bool) -> tuple[float, int]:
    """(accuracy, number of images) on the test split."""
    from objectives.data import load_test_split
    from objectives.inference import evaluate, load_classifier

    from .progress import progress
    from .threads import inference_device
    device = inference_device()
    classifier, _ = load_classifier(data, device)
    test = load_test_split(data_dir)
    with progress(len(test), "evaluating on the test set") as advance:
        return evaluate(classifier, test, device, tta=tta, advance=advance).accuracy, len(test)


def _classifier(data: dict[str, Any]):
    import torch
    from objectives.inference import load_classifier
    # Plain contiguous weights in the portable files, as in the .pt (evaluation runs channels-last).
    return load_classifier(data)[0].to(memory_format=torch.contiguous_format)


def _save(data: dict[str, Any], out: Path) -> None:
    import torch
    try:
        torch.save(data, out)
    except (OSError, RuntimeError) as e:  # torch.save reports an unwritable path as RuntimeError
        raise ValueError(f"{out}: cannot write the model file ({str(e).splitlines()[0]})") from None
