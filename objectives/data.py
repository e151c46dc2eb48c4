"""CIFAR-10 in its standard `cifar-10-batches-py` layout, as uint8 tensors.

Reading is done here rather than with torchvision's CIFAR10 class because that
class verifies the official files' MD5s and rejects any other copy of the same
format; downloading (and its checksum) is left to torchvision. The batches are
loaded with a restricted unpickler and validated (shapes, dtype, labels).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.settings import DATA_DIR_ENV, data_dir as resolve_data_dir  # flag > $SEARCH_DATA_DIR > ./data, declared once

from .safe_pickle import BadPickle, UnsafePickleError, load_dict

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """The CIFAR-10 folder is missing, truncated, corrupt or malformed."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, N x 3 x 32 x 32
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Cifar10:
    train: Split
    test: Split
    root: Path


def find_batches(root: Path) -> Path | None:
    """The cifar-10-batches-py folder: `root` itself or its child of that name."""
    for candidate in (root, root / FOLDER):
        if (candidate / "test_batch").exists() or (candidate / "data_batch_1").exists():
            return candidate
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3 x 32 x 32 uint8, labels N int64) from one pickled batch file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing batch file") from None
    try:
        batch = load_dict(raw)
    except UnsafePickleError as e:
        raise DataError(f"{path}: {e}") from e
    except BadPickle as e:
        raise DataError(f"{path}: truncated or corrupt batch file ({e})") from e
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 batch (no 'data' or 'labels' entry)")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be an N x 3072 uint8 array, got shape {shape} "
                        f"dtype {getattr(data, 'dtype', type(data).__name__)}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels must be integers 0..{len(CLASSES) - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_split(folder: Path, files: tuple[str, ...]) -> Split:
    parts = [read_batch(folder / f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def missing_data_message(root: Path, what: str) -> str:
    """One line: where we looked (absolute) and the three ways to provide the data."""
    return (f"no CIFAR-10 in {root.resolve()} ({what}); provide it one of three ways: --data-dir DIR "
            f"(a folder holding {FOLDER}), ${DATA_DIR_ENV}=DIR, or `search prepare-data [--data-dir DIR]` "
            f"on a machine that can download it")


def download(root: Path) -> None:
    """Fetch the official archive with torchvision, which checks its MD5."""
    from torchvision.datasets import CIFAR10
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # network errors come in many types; the user needs one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(missing_data_message(root, f"the download failed: {reason}")) from e


def ensure_cifar10(data_dir: str | os.PathLike | None = None) -> Path:
    """The batches folder, downloaded first if absent: a cheap check that commands run before
    they create or change anything, so a missing data set fails first, not in the worker."""
    root = resolve_data_dir(data_dir)
    folder = find_batches(root)
    if folder is None:
        download(root)
        folder = find_batches(root)
        if folder is None:
            raise DataError(missing_data_message(root, "the download finished but left no batches"))
    return folder


def load_cifar10(data_dir: str | os.PathLike | None = None, download_missing: bool = True) -> Cifar10:
    """Load train (50,000) and test (10,000) images; download with torchvision if absent."""
    root = resolve_data_dir(data_dir)
    folder = find_batches(root)
    if folder is None:
        if not download_missing:
            raise DataError(missing_data_message(root, f"expected {FOLDER}/data_batch_1..5 and test_batch"))
        folder = ensure_cifar10(root)
    return Cifar10(_read_split(folder, TRAIN_FILES), _read_split(folder, TEST_FILES), folder)


def load_test_split(data_dir: str | os.PathLike | None = None) -> Split:
    """The 10,000 test images alone (what evaluation reads: a fifth of the file bytes to decode).
    A reader: it downloads nothing and creates no data folder."""
    root = resolve_data_dir(data_dir)
    folder = find_batches(root)
    if folder is None:
        raise DataError(missing_data_message(root, f"expected {FOLDER}/test_batch"))
    return _read_split(folder, TEST_FILES)
