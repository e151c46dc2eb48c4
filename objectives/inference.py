"""Running a trained network: the device choice, a classifier that carries its normalisation,
and evaluation (accuracy, loss, predictions; optionally flip TTA).

One path for every caller: the trainer's validation, `search evaluate`, `search predict`,
`export-best --evaluate` and the portable exports all run a `Classifier`, which takes float
pixels in [0, 1] and normalises inside, so no caller can forget or repeat the normalisation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_model
from .data import Split


def default_device() -> str:
    """Where evaluation and prediction run: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


# channels_last on every device: cuDNN's fast path on a GPU, and oneDNN's on a CPU (one thread,
# measured: the demo's 25k-parameter network trains 1.4x and evaluates 1.5x as fast; a
# 64-128-256 network 1.15x and 1.3x).
MEMORY_FORMAT = torch.channels_last


# Images per evaluation batch, (CPU, GPU): a GPU wants large batches; on a CPU, batches of 128
# stay in cache (measured on 2 cores: a 16-16-32 network 1.2-2.5x, a 64-128-256 one 1.1x as fast as 1,024).
EVAL_BATCH = (128, 1024)


def autocast(device: torch.device):
    # bf16 on CUDA: tensor-core speed without fp16's loss scaling; CPU stays fp32.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


class Normalize(nn.Module):
    """Pixels in [0, 1] -> per-channel standardised, with the training split's mean and std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """A network with its normalisation inside: float32 pixels in [0, 1], N x 3 x 32 x 32, in;
    logits out. What evaluation runs, and what the portable exports trace, so those files
    run without this package."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.train(model.training)  # a wrapper of a model in eval mode evaluates, and leaves it, in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def load_classifier(path_or_dict: str | os.PathLike | dict[str, Any], device: str | torch.device = "cpu"
                    ) -> tuple[Classifier, dict[str, Any]]:
    """(classifier in eval mode, the file's dict) from a file written by `search export-best`."""
    model, info = load_model(path_or_dict)
    norm = info["normalization"]
    return Classifier(model, norm["mean"], norm["std"]).to(device, memory_format=MEMORY_FORMAT).eval(), info


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    predictions: torch.Tensor  # int64 on the CPU, one class per image
    single_view_accuracy: float  # the same without flip averaging (equal to accuracy without tta)


@torch.no_grad()
def evaluate(classifier: nn.Module, split: Split, device: str | torch.device = "cpu", *, tta: bool = False,
             advance: Callable[[int], None] | None = None) -> EvalResult:
    """Accuracy and mean cross-entropy of `classifier` (pixels in [0, 1] in, see `Classifier`) on
    `split`; with `tta`, logits are averaged over each image and its mirror. `advance(n)` is told
    each batch's size (progress). Batches of EVAL_BATCH images for the device."""
    device = torch.device(device)
    batch_size = EVAL_BATCH[device.type == "cuda"]
    was_training = classifier.training
    classifier.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    preds, single_preds = [], []
    for i in range(0, len(split), batch_size):
        # Laid out on the uint8 slice: one copy of a quarter of the bytes (.float() keeps the layout).
        x = split.images[i:i + batch_size].to(device, non_blocking=True, memory_format=MEMORY_FORMAT).float().div_(255)
        y = split.labels[i:i + batch_size].to(device, non_blocking=True)
        with autocast(device):
            logits = classifier(x).float()
            single_preds.append(logits.argmax(1))
            if tta:
                logits = (logits + classifier(x.flip(3)).float()) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        preds.append(logits.argmax(1))
        if advance is not None:
            advance(len(y))
    classifier.train(was_training)
    labels = split.labels.cpu()
    pred, single = (torch.cat(p).cpu() if p else torch.zeros(0, dtype=torch.long) for p in (preds, single_preds))
    n = max(1, len(split))
    return EvalResult(float((pred == labels).sum()) / n, float(loss_sum) / n, pred, float((single == labels).sum()) / n)


def predict(classifier: nn.Module, images: torch.Tensor, device: str | torch.device = "cpu", *, tta: bool = False,
            advance: Callable[[int], None] | None = None) -> torch.Tensor:
    """One class per uint8 image (int64 on the CPU): `evaluate` without labels."""
    unlabeled = Split(images, torch.zeros(len(images), dtype=torch.long))
    return evaluate(classifier, unlabeled, device, tta=tta, advance=advance).predictions
