"""Train one architecture with one recipe, fast on a GPU and identical in logic on a CPU.

Reads top to bottom in pipeline order: data on the device -> model and optimiser
-> one epoch (shuffle, augment, step) -> evaluation -> the loop with its report
hook and fault handling. Speed choices are explained where they are made.
"""
from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import augment
from .architecture import ArchConfig
from .data import Cifar10, Split, stratified_split
from .model import build
from .optimizers import get_optimizer
from .recipe import Recipe
from .schedule import lr_factor

OnEpoch = Callable[[int, dict[str, Any]], "bool | None"]
NAN_CHECK_EVERY = 25  # steps between checks of the running loss (each check waits for the GPU)


# ---- data --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainData:
    """The images a trial trains and validates on, and the normalisation taken from its train split."""
    train: Split
    val: Split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to(self, device: str | torch.device) -> "TrainData":
        """The same data on `device`: a worker moves it once, and every trial's Trainer
        then finds it there (its own .to() is a no-op)."""
        move = lambda s: Split(s.images.to(device), s.labels.to(device))  # noqa: E731
        return TrainData(move(self.train), move(self.val), self.mean, self.std)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.double().div_(255)
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())


def prepare_data(cifar: Cifar10, val_size: int = 5_000, seed: int = 0,
                 train_limit: int | None = None) -> TrainData:
    """Hold out a stratified, seeded validation split; optionally keep only the first
    `train_limit` training images (small smoke studies)."""
    train_idx, val_idx = stratified_split(cifar.train.labels, val_size, seed)
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    train = cifar.train.subset(train_idx)
    mean, std = channel_stats(train.images)
    return TrainData(train, cifar.train.subset(val_idx), mean, std)


def normalize(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images_uint8.float().div_(255) - mean) / std


# ---- evaluation -------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    predictions: torch.Tensor  # int64 on the CPU, one class per image


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, mean, std, device: str | torch.device = "cpu",
             tta: bool = False, batch_size: int = 1024,
             advance: Callable[[int], None] | None = None) -> EvalResult:
    """Accuracy and mean cross-entropy of `model` on `split`; with `tta`, logits are
    averaged over each image and its mirror. `advance(n)` is told each batch's size (progress)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    preds = []
    for i in range(0, len(split), batch_size):
        x = normalize(split.images[i:i + batch_size].to(device, non_blocking=True), mean_t, std_t)
        y = split.labels[i:i + batch_size].to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        preds.append(logits.argmax(1))
        if advance is not None:
            advance(len(y))
    model.train(was_training)
    pred = torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.long)
    n = max(1, len(split))
    return EvalResult(float((pred == split.labels.cpu()).sum()) / n, float(loss_sum) / n, pred)


def default_device() -> str:
    """Where evaluation and prediction run: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _autocast(device: torch.device):
    # bf16 on CUDA: tensor-core speed without fp16's loss scaling; CPU stays fp32.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


# ---- model and optimiser ----------------------------------------------------------------

def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        # BN weights/biases and classifier bias are 1-D: decaying them only shrinks scales.
        (no_decay if p.ndim <= 1 and not recipe.decay_bn_and_bias else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": recipe.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    fused = device.type == "cuda"
    return get_optimizer(recipe.optimizer).make(groups, recipe.lr, recipe.momentum, fused)


# ---- the run ----------------------------------------------------------------------------

class NonFiniteLoss(RuntimeError):
    pass


class Interrupted(RuntimeError):
    """`should_stop()` turned true mid-epoch (the worker was asked to stop)."""


@dataclass
class TrainResult:
    status: str                      # completed | stopped (on_epoch asked) | interrupted | diverged | oom
    reason: str
    epochs_run: int
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_val_acc: float
    best_state: dict[str, torch.Tensor] | None = field(repr=False)  # CPU copy of the evaluated weights

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


class Trainer:
    """One training run. `run()` trains to the end (or until stopped); `checkpoint()` /
    `load_checkpoint()` capture and restore everything needed to resume mid-run."""

    def __init__(self, arch: ArchConfig, recipe: Recipe, data: TrainData, device: str | torch.device = "cpu",
                 seed: int = 0, compile: bool = False):
        self.arch, self.recipe, self.data = arch, recipe, data
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick the fastest kernels
        torch.manual_seed(seed)  # weight init and dropout
        self.model = build(arch).to(self.device, memory_format=torch.channels_last if cuda else torch.preserve_format)
        # compile costs tens of seconds per new architecture; it pays only for long runs.
        self.forward = torch.compile(self.model) if compile else self.model
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
                    if recipe.ema_decay else None)
        # The whole split lives on the device as uint8 (150 MB for 50k images): no loader on the hot path.
        self.train_images = data.train.images.to(self.device)
        self.train_labels = data.train.labels.to(self.device)
        self.val = Split(data.val.images.to(self.device), data.val.labels.to(self.device))
        self.mean = torch.tensor(data.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(data.std, device=self.device).view(1, 3, 1, 1)
        n = len(data.train)
        if n == 0:
            raise ValueError("training split is empty")
        self.batch_size = min(recipe.batch_size, n)
        self.steps_per_epoch = n // self.batch_size  # drop the ragged last batch: static shapes
        self.optimizer = make_optimizer(self.model, recipe, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(lr_factor, recipe, self.steps_per_epoch))
        self.gen = torch.Generator(device=self.device).manual_seed(seed)  # shuffles and augmentation
        self.np_rng = np.random.default_rng(seed)                         # mixup weights
        self.epoch = 0                      # epochs completed
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.best_val_acc = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.should_stop: Callable[[], bool] = lambda: False

    # -- one epoch --
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        r, g = self.recipe, self.gen
        x = x.float().div_(255)
        x = augment.random_crop(x, r.crop_padding, r.padding_mode, g)
        if r.flip:
            x = augment.random_flip(x, g)
        x = augment.random_rotate(x, r.rotation_degrees, g)
        x = (x - self.mean) / self.std
        return augment.cutout(x, r.cutout, g)  # after normalising: the square becomes the mean colour

    def train_epoch(self) -> dict[str, float]:
        r, model = self.recipe, self.model
        model.train()
        perm = torch.randperm(len(self.train_labels), generator=self.gen, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for step in range(self.steps_per_epoch):
            idx = perm[step * self.batch_size:(step + 1) * self.batch_size]
            x, y = self._augment(self.train_images[idx]), self.train_labels[idx]
            targets = F.one_hot(y, self.arch.num_classes).float()
            if r.mixup_alpha > 0:
                x, targets = augment.mixup(x, targets, float(self.np_rng.beta(r.mixup_alpha, r.mixup_alpha)), self.gen)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(self.device):
                logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=r.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if r.grad_clip_mode == "norm":
                nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip_max)
            elif r.grad_clip_mode == "value":
                nn.utils.clip_grad_value_(model.parameters(), r.grad_clip_max)
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            if self.should_stop():
                raise Interrupted(f"interrupted during epoch {self.epoch + 1}")
            if (step + 1) % NAN_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                raise NonFiniteLoss(f"non-finite training loss at epoch {self.epoch + 1}, step {step + 1}")
        seen = self.steps_per_epoch * self.batch_size
        train_loss = float(loss_sum) / seen
        if not np.isfinite(train_loss):
            raise NonFiniteLoss(f"non-finite training loss at epoch {self.epoch + 1}")
        return {"train_loss": train_loss, "train_acc": float(correct) / seen, "train_images": seen}

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # -- the loop --
    def run(self, on_epoch: OnEpoch | None = None, should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Train from `self.epoch` to the recipe's last epoch. `should_stop()` is polled every
        step: when true, the run ends as `interrupted` (the last finished epoch is kept)."""
        status, reason, oom = "completed", "", False
        if should_stop is not None:
            self.should_stop = should_stop
        try:
            while self.epoch < self.recipe.epochs:
                t0 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                metrics = self.train_epoch()
                train_seconds = time.perf_counter() - t0
                # Without a validation split (a final run on all training images) the latest
                # epoch is the best one known: its weights are kept, and val_acc is None.
                ev = evaluate(self.eval_model, self.val, self.data.mean, self.data.std, self.device,
                              tta=self.recipe.tta_flip) if len(self.val) else None
                self.epoch += 1
                is_best = ev is None or ev.accuracy > self.best_val_acc
                if is_best:
                    self.best_epoch = self.epoch
                    self.best_val_acc = ev.accuracy if ev is not None else self.best_val_acc
                    self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.eval_model.state_dict().items()}
                metrics.update(epoch=self.epoch, val_acc=ev.accuracy if ev else None, val_loss=ev.loss if ev else None, lr=lr,
                               epoch_seconds=time.perf_counter() - t0, train_seconds=train_seconds,
                               images_per_second=metrics.pop("train_images") / train_seconds, is_best=is_best)
                self.history.append(metrics)
                if on_epoch is not None and on_epoch(self.epoch, metrics):
                    status, reason = "stopped", f"stopped by on_epoch after epoch {self.epoch}"
                    break
        except NonFiniteLoss as e:
            status, reason = "diverged", str(e)
        except Interrupted as e:
            status, reason = "interrupted", str(e)
        except torch.OutOfMemoryError as e:
            status, reason, oom = "oom", f"out of memory at epoch {self.epoch + 1}: {str(e).splitlines()[0]}", True
        if oom:  # outside the except block, so the traceback no longer pins the tensors
            self.release()
        return TrainResult(status, reason, self.epoch, list(self.history), self.best_epoch,
                           self.best_val_acc, self.best_state)

    def release(self) -> None:
        """Drop every device tensor this run holds and return the memory to the device."""
        self.model = self.forward = self.ema = self.optimizer = self.scheduler = None
        self.train_images = self.train_labels = self.val = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- resuming --
    def checkpoint(self) -> dict[str, Any]:
        """Everything to resume after `self.epoch` epochs; loads with torch.load(weights_only=True)."""
        return {
            "epoch": self.epoch, "history": copy.deepcopy(self.history),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc, "best_state": self.best_state,
            "generator": self.gen.get_state(), "np_rng": self.np_rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.history = ckpt["epoch"], list(ckpt["history"])
        self.best_epoch, self.best_val_acc, self.best_state = ckpt["best_epoch"], ckpt["best_val_acc"], ckpt["best_state"]
        self.gen.set_state(ckpt["generator"])
        self.np_rng.bit_generator.state = ckpt["np_rng"]
        torch.set_rng_state(ckpt["torch_rng"])


def train(arch: ArchConfig, recipe: Recipe, data: TrainData, device: str | torch.device = "cpu",
          on_epoch: OnEpoch | None = None, seed: int = 0, compile: bool = False) -> TrainResult:
    """Train `arch` with `recipe`; `on_epoch(epoch, metrics)` may return True to stop (pruning).
    The result's `best_state` holds the best epoch's weights for checkpointing."""
    return Trainer(arch, recipe, data, device, seed, compile).run(on_epoch)
