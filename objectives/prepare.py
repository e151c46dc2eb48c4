"""From the CIFAR-10 tensors to what a trial trains on: a stratified, seeded validation
split held out of the training images, and the normalisation taken from what is left.

Reading the files (format, safety, download) is objectives/data.py's job; this module
only splits and measures tensors, so a benchmark can prepare any pair of splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.settings import DEFAULT_SEED, DEFAULT_VAL_SIZE

from .data import Cifar10, Split


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
    """Per-channel (mean, std) of uint8 images, as fractions of 255."""
    x = images.double().div_(255)
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_index, val_index): `val_size` images held out with class proportions kept.

    Each class gives its share (largest remainders settle rounding); which images go
    is a seeded numpy PCG64 permutation, stable across platforms and versions.
    Both index tensors are sorted, so the split is reproducible byte for byte.
    """
    labels_np = labels.numpy()
    n = len(labels_np)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size: must be in [0, {n - 1}] for {n} training images, got {val_size}")
    classes, counts = np.unique(labels_np, return_counts=True)
    exact = counts * val_size / n
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: val_size - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.permutation(np.flatnonzero(labels_np == c))[:k] for c, k in zip(classes, take)])
    val = np.sort(val)
    train = np.setdiff1d(np.arange(n), val)
    return torch.from_numpy(train), torch.from_numpy(val)


def prepare_data(cifar: Cifar10, val_size: int = DEFAULT_VAL_SIZE, seed: int = DEFAULT_SEED,
                 train_limit: int | None = None) -> TrainData:
    """Hold out a stratified, seeded validation split; optionally keep only the first
    `train_limit` training images (small smoke studies)."""
    train_idx, val_idx = stratified_split(cifar.train.labels, val_size, seed)
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    train = cifar.train.subset(train_idx)
    mean, std = channel_stats(train.images)
    return TrainData(train, cifar.train.subset(val_idx), mean, std)
