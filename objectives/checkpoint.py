"""The model file: one dict that `torch.load(path, weights_only=True)` reads with plain
PyTorch (tensors, strings, numbers, lists and dicts only: no pickled code).

    {"format": "resnet-search/model-v1",
     "architecture": {...ArchConfig...}, "recipe": {...Recipe...},
     "normalization": {"mean": [r, g, b], "std": [r, g, b]},   # of pixel values / 255
     "metrics": {"val_acc": ..., "best_epoch": ..., "params": ..., "macs": ...},
     "data": {"val_size": ..., "seed": ...}, "study": ..., "trial": ...,
     "state_dict": {...}}

`load_model` rebuilds the network from it.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .architecture import ArchConfig
from .counting import count_macs, count_params
from .model import ResNet, build

FORMAT = "resnet-search/model-v1"


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
        data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a model file this tool wrote ({type(e).__name__})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    return data


def load_model(path_or_dict: str | os.PathLike | dict[str, Any], device: str = "cpu") -> tuple[ResNet, dict[str, Any]]:
    """(model in eval mode, the file's dict) from a file written by `search export-best`."""
    data = path_or_dict if isinstance(path_or_dict, dict) else read_model_file(path_or_dict)
    model = build(ArchConfig.from_dict(data["architecture"]))
    model.load_state_dict(data["state_dict"])
    return model.to(device).eval(), data
