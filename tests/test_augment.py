"""GPU-style batched augmentation: per-sample randomness, correctness, determinism."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from objectives import augment


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=64, size=32):
    return torch.rand(n, 3, size, size, generator=gen(99))


def test_crop_shapes_and_per_sample_offsets():
    x = images()
    out = augment.random_crop(x, 4, "zeros", gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    # Every output is an exact window of its own zero-padded input; offsets differ within the batch.
    padded = F.pad(x, (4,) * 4)
    offsets = []
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(9) for dx in range(9)
                if torch.equal(padded[i, :, dy:dy + 32, dx:dx + 32], out[i])]
        assert hits, i
        offsets.append(hits[0])
    assert len(set(offsets)) > 10


def test_reflect_padding_has_no_zero_border():
    x = images() + 1.0  # strictly positive
    out = augment.random_crop(x, 4, "reflect", gen())
    assert (out > 0).all()
    assert (augment.random_crop(x, 4, "zeros", gen()) == 0).any()


def test_flip_is_exact_mirror_for_about_half():
    x = images(256)
    out = augment.random_flip(x, gen())
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped ^ kept).all()
    assert 90 < flipped.sum() < 166


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(128, 3, 32, 32)
    out = augment.cutout(x, 8, gen())
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert (zeros <= 64).all() and (zeros > 0).all()
    assert (zeros == 64).float().mean() > 0.5          # interior centres give the full 8x8 square
    assert torch.equal((out == 0).all(1), (out == 0).any(1))  # same square on every channel
    assert len({tuple(torch.nonzero(o[0] == 0)[0].tolist()) for o in out}) > 20


def test_rotation_per_sample_and_zero_is_identity():
    x = images(8)
    assert torch.equal(augment.random_rotate(x, 0.0, gen()), x)
    out = augment.random_rotate(x, 15.0, gen())
    assert out.shape == x.shape
    x0 = x[:1].expand(8, -1, -1, -1)
    rotated_same = augment.random_rotate(x0, 15.0, gen())
    assert not torch.allclose(rotated_same[0], rotated_same[1])


def test_mixup_mixes_images_and_labels_by_the_same_weight():
    x = images(16)
    y = torch.arange(16) % 10
    targets = F.one_hot(y, 10).float()
    mixed_x, mixed_t = augment.mixup(x, targets, 0.7, gen(3))
    perm = torch.randperm(16, generator=gen(3))
    assert torch.allclose(mixed_x, 0.7 * x + 0.3 * x[perm])
    assert torch.allclose(mixed_t, 0.7 * targets + 0.3 * targets[perm])
    assert torch.allclose(mixed_t.sum(1), torch.ones(16))


def test_same_seed_same_augmentation():
    x = images()
    def pipeline(g):
        return augment.cutout(augment.random_flip(augment.random_crop(x, 4, "reflect", g), g), 8, g)
    assert torch.equal(pipeline(gen(5)), pipeline(gen(5)))
    assert not torch.equal(pipeline(gen(5)), pipeline(gen(6)))
