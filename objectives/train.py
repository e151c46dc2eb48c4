"""Train one architecture with one recipe, fast on a GPU and identical in logic on a CPU.

Reads top to bottom in pipeline order: the recipe's optimizer -> the Trainer (model, data
on the device, schedule) -> one epoch (shuffle, augment, step) -> the loop (validation,
report hook, fault handling) -> resuming mid-run -> the result. Data preparation is in
prepare.py, evaluation in inference.py (the one `search evaluate` runs too), the optimizers
in optimizers.py, the checkpoint's format in checkpoint.py. Speed choices are explained
where they are made.
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
from .checkpoint import check_resume, resume_file
from .clipping import GRAD_CLIPPERS
from .data import Split
from .inference import MEMORY_FORMAT, Classifier, autocast, evaluate
from .model import build
from .optimizers import get_optimizer
from .prepare import TrainData
from .recipe import Recipe
from .schedule import lr_factor

OnEpoch = Callable[[int, dict[str, Any]], "bool | None"]
NAN_CHECK_EVERY = 25  # steps between checks of the running loss (each check waits for the GPU)


# ---- the recipe's optimizer -------------------------------------------------------------

def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        # BN weights/biases and classifier bias are 1-D: decaying them only shrinks scales.
        (no_decay if p.ndim <= 1 and not recipe.decay_bn_and_bias else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": recipe.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    fused = device.type == "cuda"  # one kernel for all tensors where the optimizer has one
    return get_optimizer(recipe.optimizer).make(groups, recipe.lr, recipe.momentum, fused)


# ---- the run ----------------------------------------------------------------------------

class NonFiniteLoss(RuntimeError):
    pass


class Interrupted(RuntimeError):
    """`should_stop()` turned true mid-epoch (the worker was asked to stop)."""


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
        self.model = build(arch).to(self.device, memory_format=MEMORY_FORMAT)
        # compile costs tens of seconds per new architecture; it pays only for long runs.
        self.forward = torch.compile(self.model) if compile else self.model
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
                    if recipe.ema_decay else None)
        # The whole split lives on the device as uint8 (150 MB for 50k images): no loader on the hot path.
        self.train_images = data.train.images.to(self.device)
        self.train_labels = data.train.labels.to(self.device)
        self.val = Split(data.val.images.to(self.device), data.val.labels.to(self.device))
        # What validation runs: the evaluated weights with the train split's normalisation,
        # whose Normalize also feeds the training batches.
        self.classifier = Classifier(self.eval_model, data.mean, data.std).to(self.device)
        n = len(data.train)
        if n == 0:
            raise ValueError("training split is empty")
        self.batch_size = min(recipe.batch_size, n)
        self.steps_per_epoch = n // self.batch_size  # drop the ragged last batch: static shapes
        self.optimizer = make_optimizer(self.model, recipe, self.device)
        self.clip_gradients = GRAD_CLIPPERS[recipe.grad_clip_mode]  # None: no clipping
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
    def train_epoch(self) -> dict[str, float]:
        r, model = self.recipe, self.model
        model.train()
        perm = torch.randperm(len(self.train_labels), generator=self.gen, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for step in range(self.steps_per_epoch):
            idx = perm[step * self.batch_size:(step + 1) * self.batch_size]
            x = augment.train_batch(self.train_images[idx], r, self.classifier.normalize, self.gen)
            y = self.train_labels[idx]
            targets = F.one_hot(y, self.arch.num_classes).float()
            if r.mixup_alpha > 0:
                x, targets = augment.mixup(x, targets, float(self.np_rng.beta(r.mixup_alpha, r.mixup_alpha)), self.gen)
            x = x.contiguous(memory_format=MEMORY_FORMAT)
            with autocast(self.device):
                logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=r.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip_gradients is not None:
                self.clip_gradients(model.parameters(), r.grad_clip_max)
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

    def eval_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the evaluated weights (what a best epoch keeps)."""
        # Standard layout: the file export-best writes holds plain contiguous tensors.
        return {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
                for k, v in self.eval_model.state_dict().items()}

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
                ev = evaluate(self.classifier, self.val, self.device, tta=self.recipe.tta_flip) if len(self.val) else None
                self.epoch += 1
                is_best = ev is None or ev.accuracy > self.best_val_acc
                if is_best:
                    self.best_epoch = self.epoch
                    self.best_val_acc = ev.accuracy if ev is not None else self.best_val_acc
                    self.best_state = self.eval_state()
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
        self.model = self.forward = self.ema = self.classifier = self.optimizer = self.scheduler = None
        self.train_images = self.train_labels = self.val = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- resuming --
    def checkpoint(self) -> dict[str, Any]:
        """Everything to resume after `self.epoch` epochs, labelled with its format and this run's
        architecture and recipe (objectives/checkpoint.py); loads with torch.load(weights_only=True)."""
        return resume_file(self.arch, self.recipe, {
            "epoch": self.epoch, "history": copy.deepcopy(self.history),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            # While the best epoch is the current one its weights are the model's (or the EMA's)
            # already in the file: a second copy would add a quarter to a third of its size.
            "best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc,
            "best_is_current": self.best_epoch == self.epoch,
            "best_state": None if self.best_epoch == self.epoch else self.best_state,
            "generator": self.gen.get_state(), "np_rng": self.np_rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        })

    def load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        """Continue from `ckpt`; a ValueError, before anything is loaded, when it is not a resume
        checkpoint of this architecture and recipe."""
        check_resume(ckpt, self.arch, self.recipe)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.history = ckpt["epoch"], list(ckpt["history"])
        self.best_epoch, self.best_val_acc, self.best_state = ckpt["best_epoch"], ckpt["best_val_acc"], ckpt["best_state"]
        if ckpt.get("best_is_current"):  # stored once, as the evaluated weights just loaded
            self.best_state = self.eval_state()
        self.gen.set_state(ckpt["generator"])
        self.np_rng.bit_generator.state = ckpt["np_rng"]
        torch.set_rng_state(ckpt["torch_rng"])


# ---- the result ---------------------------------------------------------------------------

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


def train(arch: ArchConfig, recipe: Recipe, data: TrainData, device: str | torch.device = "cpu",
          on_epoch: OnEpoch | None = None, seed: int = 0, compile: bool = False) -> TrainResult:
    """Train `arch` with `recipe`; `on_epoch(epoch, metrics)` may return True to stop (pruning).
    The result's `best_state` holds the best epoch's weights for checkpointing."""
    return Trainer(arch, recipe, data, device, seed, compile).run(on_epoch)
