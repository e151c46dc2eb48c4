"""Per-sample augmentation of whole batches on the training device.

Every function takes a float batch N x C x H x W and a torch.Generator on the
same device, and draws one random value per image: no per-image Python, no
DataLoader workers. (torchvision.transforms.v2 applies one draw to a whole
batch tensor, which is why these few lines are written here.) `train_batch` applies a
recipe's augmentations in their order.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .recipe import Recipe


def _uniform(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def random_crop(x: torch.Tensor, padding: int, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Pad by `padding` (reflect or zeros), then take an independent random HxW crop per image."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect" if mode == "reflect" else "constant")
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return out.gather(3, cols)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _uniform(x.shape[0], gen, x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square (clipped at the borders) at a random centre per image."""
    if size == 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=gen, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    lo = size // 2
    inside = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)
    return x.masked_fill(inside[:, None], 0.0)


def random_rotate(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by its own angle, uniform in [-degrees, degrees] (bilinear, zero fill)."""
    if degrees == 0:
        return x
    n = x.shape[0]
    angle = (2 * _uniform(n, gen, x.device) - 1) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float, gen: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix the batch with a random permutation of itself by weight `lam` (one Beta(alpha, alpha)
    draw per batch, as in Zhang et al., 2018). `targets` are class probabilities (N x classes)."""
    perm = torch.randperm(x.shape[0], generator=gen, device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def train_batch(images: torch.Tensor, recipe: "Recipe", normalize: Callable[[torch.Tensor], torch.Tensor],
                gen: torch.Generator) -> torch.Tensor:
    """uint8 images -> the float batch a training step sees: crop, flip and rotate the pixels,
    normalise, then cut out (after normalising, so the square becomes the mean colour)."""
    x = images.float().div_(255)
    x = random_crop(x, recipe.crop_padding, recipe.padding_mode, gen)
    if recipe.flip:
        x = random_flip(x, gen)
    x = random_rotate(x, recipe.rotation_degrees, gen)
    return cutout(normalize(x), recipe.cutout, gen)
