"""Batched torch augmentation for the Fashion-MNIST cloud model (needs the "build" extra).

Images are float NHWC batches in uint8 units [0, 255]. Every sample gets a random shift (pad +
crop), a horizontal flip and random erasing; a fraction of each batch also gets one common
corruption (gaussian noise, gaussian blur, contrast, brightness, a small rotation and shift) at a
random strength. The held-out corruptions of cloud/build/corruptions.py (JPEG, pixelation, motion
blur, salt and pepper) are deliberately not here, so the robustness report can measure them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

Corruption = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values[:, None, None, None]


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = _per_sample(_uniform(len(x), 5.0, 70.0, g))
    return x + sigma * torch.randn(x.shape, generator=g)


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = _uniform(len(x), 0.5, 2.8, g)
    offsets = torch.arange(-5, 6, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # [N, 11], one separable kernel per sample
    planes = x.permute(3, 0, 1, 2)  # [1, N, H, W]: each sample its own channel
    n = len(x)
    planes = F.conv2d(
        F.pad(planes, (5, 5, 0, 0), mode="replicate"), kernel[:, None, None], groups=n
    )
    planes = F.conv2d(
        F.pad(planes, (0, 0, 5, 5), mode="replicate"), kernel[:, None, :, None], groups=n
    )
    return planes.permute(1, 2, 3, 0)


def _contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    factor = _per_sample(_uniform(len(x), 0.15, 1.0, g))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + factor * (x - mean)


def _brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x + _per_sample(_uniform(len(x), -90.0, 90.0, g))


def _affine(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    angle = _uniform(n, -20.0, 20.0, g) * math.pi / 180
    shift = _uniform(2 * n, -0.3, 0.3, g).reshape(n, 2)  # up to ~4 px, in [-1, 1] units
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    theta = torch.cat([theta, shift[:, :, None]], 2)
    planes = x.permute(0, 3, 1, 2)
    grid = F.affine_grid(theta, list(planes.shape), align_corners=False)
    return F.grid_sample(planes, grid, align_corners=False).permute(0, 2, 3, 1)


CORRUPTIONS: tuple[Corruption, ...] = (_noise, _blur, _contrast, _brightness, _affine)


def _shift_flip(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    n, h, w, _ = x.shape
    padded = F.pad(x.permute(0, 3, 1, 2), (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=g)).unbind(0)
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(n, h, w)
    flip = torch.rand(n, generator=g) < 0.5
    cols = torch.where(flip[:, None, None], cols.flip(2), cols)
    return padded[torch.arange(n)[:, None, None], rows, cols]


def _erase(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Random erasing: a rectangle of 2-30% of the image filled with noise, on a fraction p."""
    n, h, w, _ = x.shape
    area = _uniform(n, 0.02, 0.3, g) * h * w
    ratio = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g))
    eh = torch.sqrt(area * ratio).clamp(1, h).long()
    ew = torch.sqrt(area / ratio).clamp(1, w).long()
    top = (torch.rand(n, generator=g) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=g) * (w - ew + 1)).long()
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = (
        (ys >= top[:, None, None])
        & (ys < (top + eh)[:, None, None])
        & (xs >= left[:, None, None])
        & (xs < (left + ew)[:, None, None])
        & (torch.rand(n, generator=g) < p)[:, None, None]
    )
    fill = 255 * torch.rand(x.shape, generator=g)
    return torch.where(inside[..., None], fill, x)


def augment(x: torch.Tensor, g: torch.Generator, corrupt_fraction: float = 0.15) -> torch.Tensor:
    """Shift, flip and erase every image; corrupt `corrupt_fraction` of them (one kind each)."""
    x = _erase(_shift_flip(x.to(torch.float32), g), g)
    kinds = torch.randint(0, len(CORRUPTIONS), (len(x),), generator=g)
    chosen = torch.rand(len(x), generator=g) < corrupt_fraction
    for kind, corruption in enumerate(CORRUPTIONS):
        idx = torch.nonzero(chosen & (kinds == kind)).flatten()
        if len(idx):
            x[idx] = corruption(x[idx], g)
    return x.clamp(0, 255).round()
