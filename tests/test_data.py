"""CIFAR-10 in its standard layout: reading, validation, the held-out split."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from objectives import data as data_mod
from objectives.data import DataError, load_cifar10, load_test_split, resolve_data_dir
from objectives.prepare import stratified_split


def test_full_rebuilt_set(cifar_full):
    d = load_cifar10(cifar_full, download_missing=False)
    assert d.train.images.shape == (50_000, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (10_000, 3, 32, 32)
    assert d.train.labels.bincount().tolist() == [5_000] * 10
    assert d.test.labels.bincount().tolist() == [1_000] * 10
    mean = d.train.images.double().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.491, 0.482, 0.447], dtype=torch.double), atol=2e-3)


def test_accepts_the_batches_folder_itself_and_the_env_var(cifar_small, monkeypatch):
    direct = load_cifar10(cifar_small / "cifar-10-batches-py", download_missing=False)
    assert len(direct.train) == 1_000 and len(direct.test) == 200
    monkeypatch.setenv("SEARCH_DATA_DIR", str(cifar_small))
    assert resolve_data_dir() == cifar_small
    assert resolve_data_dir("/elsewhere").as_posix() == "/elsewhere"  # the flag wins
    assert torch.equal(load_cifar10(download_missing=False).train.images, direct.train.images)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 in .*data_batch_1"):
        load_cifar10(tmp_path, download_missing=False)


def test_evaluation_reads_the_test_file_alone(cifar_small, tmp_path):
    test = load_test_split(cifar_small)
    full = load_cifar10(cifar_small, download_missing=False).test
    assert torch.equal(test.images, full.images) and torch.equal(test.labels, full.labels)
    only_test = tmp_path / "cifar-10-batches-py"
    only_test.mkdir()
    shutil.copy(cifar_small / "cifar-10-batches-py" / "test_batch", only_test)
    assert len(load_test_split(tmp_path)) == 200  # no training batch needed to evaluate
    with pytest.raises(DataError, match="no CIFAR-10 in .*test_batch"):
        load_test_split(tmp_path / "empty")
    assert not (tmp_path / "empty").exists()  # a reader: nothing downloaded, no folder made


def test_missing_folder_is_downloaded(cifar_small, tmp_path, monkeypatch):
    # Stand in for torchvision's download (no network here): it leaves the same layout.
    calls = []
    def fake_download(root):
        calls.append(root)
        shutil.copytree(cifar_small / "cifar-10-batches-py", root / "cifar-10-batches-py")
    monkeypatch.setattr(data_mod, "download", fake_download)
    d = load_cifar10(tmp_path / "new")
    assert calls == [tmp_path / "new"] and len(d.train) == 1_000


def copy_batches(src, dst):
    shutil.copytree(src / "cifar-10-batches-py", dst / "cifar-10-batches-py")
    return dst / "cifar-10-batches-py"


def test_truncated_batch(cifar_small, tmp_path):
    folder = copy_batches(cifar_small, tmp_path)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3: truncated or corrupt"):
        load_cifar10(tmp_path, download_missing=False)


def test_missing_batch_file(cifar_small, tmp_path):
    folder = copy_batches(cifar_small, tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5: missing"):
        load_cifar10(tmp_path, download_missing=False)


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}, "N x 3072 uint8"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "N x 3072 uint8"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "4 images but 3 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels must be integers 0..9"),
    ({b"labels": [0]}, "no 'data'"),
    ([1, 2, 3], "expected a dict"),
])
def test_malformed_batch(cifar_small, tmp_path, batch, message):
    folder = copy_batches(cifar_small, tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=message):
        load_cifar10(tmp_path, download_missing=False)


class Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent",))


def test_pickle_with_code_is_refused(cifar_small, tmp_path):
    folder = copy_batches(cifar_small, tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to load shutil.rmtree"):
        load_cifar10(tmp_path, download_missing=False)


def test_split_is_stratified_seeded_and_disjoint(cifar_full):
    labels = load_cifar10(cifar_full, download_missing=False).train.labels
    train, val = stratified_split(labels, 5_000, seed=0)
    assert len(val) == 5_000 and len(train) == 45_000
    assert labels[val].bincount().tolist() == [500] * 10
    assert not set(train.tolist()) & set(val.tolist())
    again_train, again_val = stratified_split(labels, 5_000, seed=0)
    assert again_val.numpy().tobytes() == val.numpy().tobytes()
    assert again_train.numpy().tobytes() == train.numpy().tobytes()
    _, other = stratified_split(labels, 5_000, seed=1)
    assert not torch.equal(other, val)


def test_split_sizes_not_divisible_by_classes():
    labels = torch.arange(10).repeat_interleave(torch.tensor([30, 30, 30, 30, 30, 30, 30, 30, 30, 13]))
    _, val = stratified_split(labels, 57, seed=0)
    assert len(val) == 57
    counts = labels[val].bincount(minlength=10)
    assert counts[:9].tolist() == [6] * 9 and counts[9] == 3   # shares 6.05 each, 2.62 for the small class
    with pytest.raises(ValueError, match="val_size"):
        stratified_split(labels, len(labels), seed=0)
