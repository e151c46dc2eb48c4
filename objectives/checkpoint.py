"""The two files a run writes, each one dict that `torch.load(path, weights_only=True)` reads
with plain PyTorch (tensors, strings, numbers, lists and dicts only: no pickled code), and
each saying what it is, as nanoGPT's checkpoints do.

The model file (`search export-best`, a trial's `model.pt`):

    {"format": "resnet-search/model-v1",
     "architecture": {...ArchConfig...}, "recipe": {...Recipe...},
     "normalization": {"mean": [r, g, b], "std": [r, g, b]},   # of pixel values / 255
     "metrics": {"val_acc": ..., "best_epoch": ..., "params": ..., "macs": ...},
     "data": {"val_size": ..., "seed": ...}, "study": ..., "trial": ...,
     "state_dict": {...}}

`load_model` rebuilds the network from it.

The resume checkpoint (a trial's `resume-epochN.pt`, written after every `--checkpoint-every` epochs):

    {"format": "resnet-search/resume-v2",
     "architecture": {...}, "recipe": {...},          # the run it continues
     "epoch": ..., "history": [...], "model": ..., "optimizer": ..., "scheduler": ..., "ema": ...,
     "best_epoch": ..., "best_val_acc": ..., "best_is_current": ..., "best_state": ..., random-generator states}

`best_state` is None while `best_is_current` (the best epoch is the one just trained: its weights
are "ema", or "model" without EMA); version 1 files always held it, and still load.

`check_resume` refuses one of another format or of another run: the caller starts over.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .architecture import ArchConfig
from .checks import number
from .counting import count_macs, count_params
from .model import ResNet, build
from .recipe import Recipe

FORMAT = "resnet-search/model-v1"
RESUME_FORMAT = "resnet-search/resume-v2"
# Still read: v1 stored best_state always. A v1 worker refuses v2 files (its trial starts over)
# rather than reading best_state None as "no best weights".
READABLE_RESUME_FORMATS = ("resnet-search/resume-v1", RESUME_FORMAT)


def model_file(arch: ArchConfig, recipe: dict[str, Any], state_dict: dict[str, torch.Tensor],
               mean, std, metrics: dict[str, Any], **info: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "architecture": arch.to_dict(),
        "recipe": dict(recipe),
        "normalization": {"mean": list(mean), "std": list(std)},
        "metrics": {"params": count_params(arch), "macs": count_macs(arch), **metrics},
        **info,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = load_quietly(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a model file this tool wrote ({type(e).__name__})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    return data


def load_quietly(path: str | os.PathLike) -> Any:
    """torch.load with weights only, its warnings about the file (an unusual pickle protocol)
    silenced: a caller turns a file that is no checkpoint into its own one-line message."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=True, map_location="cpu")


def check_model_dict(data: dict[str, Any], where: str = "model file") -> ArchConfig:
    """The file's architecture, once the file is known to hold what `load_model` needs; a
    ValueError naming what is missing or wrong otherwise. Nothing is built here."""
    missing = [k for k in ("architecture", "state_dict", "normalization") if k not in data]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    arch = ArchConfig.from_dict(data["architecture"])
    norm = data["normalization"]
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise ValueError(f"{where}: normalization must hold 'mean' and 'std'")
    for key in ("mean", "std"):
        values = norm[key]
        if not isinstance(values, (list, tuple)) or len(values) != 3:
            raise ValueError(f"{where}: normalization.{key} must be three numbers (R, G, B), got {values!r}")
        for v in values:
            number(f"{where}: normalization.{key}", v, 0 if key == "std" else None, lo_open=True)
    state = data["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: state_dict must map names to tensors")
    # Count before building: an architecture that does not match the weights could ask
    # for terabytes; the weights in the file bound what a matching model can need.
    needed, held = count_params(arch), sum(v.numel() for v in state.values())
    if needed > held:
        raise ValueError(f"{where}: the architecture has {needed:,} parameters but the file holds only "
                         f"{held:,} weights: they do not belong together")
    return arch


def load_model(path_or_dict: str | os.PathLike | dict[str, Any], device: str = "cpu") -> tuple[ResNet, dict[str, Any]]:
    """(model in eval mode, the file's dict) from a file written by `search export-best`."""
    data = path_or_dict if isinstance(path_or_dict, dict) else read_model_file(path_or_dict)
    where = "model file" if isinstance(path_or_dict, dict) else str(path_or_dict)
    model = build(check_model_dict(data, where))
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as e:  # missing, unexpected or mis-shaped weights
        detail = " ".join(str(e).split())
        raise ValueError(f"{where}: the weights do not match the architecture ({detail[:300]})") from None
    return model.to(device).eval(), data


def resume_file(arch: ArchConfig, recipe: Recipe, state: dict[str, Any]) -> dict[str, Any]:
    """A resume checkpoint: the trainer's `state` labelled with its format and the run it belongs to."""
    return {"format": RESUME_FORMAT, "architecture": arch.to_dict(), "recipe": recipe.to_dict(), **state}


def check_resume(ckpt: Any, arch: ArchConfig, recipe: Recipe) -> None:
    """A ValueError unless `ckpt` is a resume checkpoint of this architecture and recipe. Loading
    another run's state would fail halfway or, worse, load (same shapes, other activation or
    schedule) and silently continue someone else's training. Checkpoints of older versions
    carry no format: they are refused too, and the trial starts over."""
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if found not in READABLE_RESUME_FORMATS:
        raise ValueError(f"not a {RESUME_FORMAT} checkpoint (format {found!r}: another version wrote it)")
    for what, stored, expected in (("architecture", ArchConfig.from_dict(ckpt["architecture"]), arch),
                                   ("recipe", Recipe.from_dict(ckpt["recipe"]), recipe)):
        if stored != expected:
            have, want = stored.to_dict(), expected.to_dict()
            differ = [k for k in want if have.get(k) != want[k]]
            raise ValueError(f"the resume checkpoint is of another {what} (differs in {', '.join(differ)})")
