"""Common image corruptions at five severities, for measuring robustness (after Hendrycks and
Dietterich's ImageNet-C, scaled to 28x28 gray images).

Each corruption maps uint8 images [N, H, W] to images of the same shape and dtype, drawing any
randomness from the generator it is given: `corrupt(images, name, severity, seed)` is
deterministic. A new corruption is one function with `@register(name, in_training, levels)`;
`in_training` says whether the cloud model's training augmentation
(cloud/build/families/fashion_augment.py) covers that kind, so that a report can average the
kinds trained for apart from those held out. The augmentation is its own torch code: it never
calls these functions.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.common.errors import UserError

Images = NDArray[np.uint8]
Floats = NDArray[np.floating[Any]]
Apply = Callable[[Images, float, np.random.Generator], Floats | Images]
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    """A named corruption, its strength parameter per severity 1-5, and its function."""

    name: str
    in_training: bool
    levels: tuple[float, ...]
    apply: Apply

    def __call__(self, images: Images, severity: int, rng: np.random.Generator) -> Images:
        level = self.levels[checked_severity(severity) - 1]
        if not len(images):
            return images.copy()
        out = self.apply(images, level, rng)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


CORRUPTIONS: dict[str, Corruption] = {}
"""Every registered corruption by name, in registration order."""


class UnknownCorruption(UserError, KeyError):
    """A corruption name no registered corruption has."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownSeverity(UserError, ValueError):
    """A severity outside 1-5."""


def checked_severity(severity: int) -> int:
    """`severity` if it is one of SEVERITIES, else UnknownSeverity."""
    if severity not in SEVERITIES:
        raise UnknownSeverity(f"corruption severity {severity}: give one of 1-5")
    return severity


def register(name: str, in_training: bool, levels: Sequence[float]) -> Callable[[Apply], Apply]:
    """Decorator: register `apply(images, level, rng)` as corruption `name` (levels: 5)."""

    def decorate(apply: Apply) -> Apply:
        if name in CORRUPTIONS or len(levels) != len(SEVERITIES):
            raise ValueError(f"corruption {name!r}: taken, or not {len(SEVERITIES)} levels")
        CORRUPTIONS[name] = Corruption(name, in_training, tuple(levels), apply)
        return apply

    return decorate


def corruption(name: str) -> Corruption:
    """The registered corruption `name`; UnknownCorruption, listing the known ones, if none."""
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise UnknownCorruption(
            f"unknown corruption {name!r}; known corruptions: {', '.join(CORRUPTIONS)}"
        ) from None


def corrupt(images: Images, name: str, severity: int, seed: int = 0) -> Images:
    """`images` with corruption `name` at `severity`, the same for the same seed."""
    chosen = corruption(name)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), severity])
    return chosen(images, severity, rng)


def _each(images: Images, fn: Callable[[Images], Any]) -> Images:
    """``fn`` (an OpenCV call) applied to every image; its result is uint8 as its input."""
    return np.stack([np.asarray(fn(image), np.uint8) for image in images])


def _warp(images: Images, matrices: NDArray[np.float64]) -> Images:
    h, w = images.shape[1:3]
    return np.stack(
        [
            np.asarray(
                cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0.0,)),
                np.uint8,
            )
            for image, m in zip(images, matrices, strict=True)
        ]
    ).reshape(images.shape)


# Kinds the cloud model's training augmentation covers.


@register("gaussian_noise", True, [10, 20, 30, 40, 50])
def _gaussian_noise(images: Images, sigma: float, rng: np.random.Generator) -> Floats:
    return images + rng.normal(0.0, sigma, images.shape)


@register("gaussian_blur", True, [0.5, 1.0, 1.5, 2.0, 2.5])
def _gaussian_blur(images: Images, sigma: float, rng: np.random.Generator) -> Images:
    return _each(images, lambda image: cv2.GaussianBlur(image, (0, 0), sigma))


@register("contrast", True, [0.7, 0.5, 0.35, 0.25, 0.15])
def _contrast(images: Images, factor: float, rng: np.random.Generator) -> Floats:
    mean: Floats = images.mean(axis=(1, 2), keepdims=True)
    return mean + factor * (images - mean)


@register("brightness", True, [20, 40, 60, 80, 100])
def _brightness(images: Images, delta: float, rng: np.random.Generator) -> Floats:
    return images.astype(np.float64) + delta


@register("rotation", True, [5, 10, 15, 20, 25])
def _rotation(images: Images, degrees: float, rng: np.random.Generator) -> Images:
    h, w = images.shape[1:3]
    signs = rng.choice([-1.0, 1.0], len(images))
    centre = ((w - 1) / 2, (h - 1) / 2)
    return _warp(
        images, np.stack([cv2.getRotationMatrix2D(centre, s * degrees, 1.0) for s in signs])
    )


@register("shift", True, [1, 2, 3, 4, 5])
def _shift(images: Images, pixels: float, rng: np.random.Generator) -> Images:
    angle = rng.uniform(0, 2 * np.pi, len(images))
    matrices = np.zeros((len(images), 2, 3))
    matrices[:, 0, 0] = matrices[:, 1, 1] = 1.0
    matrices[:, 0, 2], matrices[:, 1, 2] = pixels * np.cos(angle), pixels * np.sin(angle)
    return _warp(images, matrices)


# Held out: kinds the training augmentation does not produce.


@register("jpeg", False, [30, 20, 12, 8, 5])
def _jpeg(images: Images, quality: float, rng: np.random.Generator) -> Images:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    return _each(
        images,
        lambda image: cv2.imdecode(cv2.imencode(".jpg", image, params)[1], cv2.IMREAD_GRAYSCALE),
    )


@register("pixelate", False, [20, 16, 12, 10, 8])
def _pixelate(images: Images, side: float, rng: np.random.Generator) -> Images:
    h, w = images.shape[1:3]
    small = (int(side), int(side))
    return _each(
        images,
        lambda image: cv2.resize(
            cv2.resize(image, small, interpolation=cv2.INTER_AREA),
            (w, h),
            interpolation=cv2.INTER_NEAREST,
        ),
    )


@register("motion_blur", False, [3, 5, 7, 9, 11])
def _motion_blur(images: Images, length: float, rng: np.random.Generator) -> Images:
    size = int(length)
    line = np.zeros((size, size), np.float32)
    line[size // 2] = 1.0 / size
    centre = ((size - 1) / 2, (size - 1) / 2)
    kernels = [
        cv2.warpAffine(line, cv2.getRotationMatrix2D(centre, angle, 1.0), (size, size))
        for angle in rng.uniform(0, 180, len(images))
    ]
    out = [
        cv2.filter2D(image, -1, kernel / kernel.sum())
        for image, kernel in zip(images, kernels, strict=True)
    ]
    return np.stack(out)


@register("salt_and_pepper", False, [0.02, 0.05, 0.1, 0.15, 0.2])
def _salt_and_pepper(images: Images, amount: float, rng: np.random.Generator) -> Images:
    draw = rng.random(images.shape)
    out = images.copy()
    out[draw < amount / 2] = 0
    out[draw > 1 - amount / 2] = 255
    return out
