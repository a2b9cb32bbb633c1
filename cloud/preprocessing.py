"""Decode and shape images the way a family's models expect them (shared by both tiers)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cloud.common.errors import InvalidInput
from cloud.manifest import Preprocessing


class InvalidImage(InvalidInput):
    """The input is not an image this system can read; the message says why."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG bytes into uint8 RGB [H, W, 3] or gray [H, W]."""
    if not data:
        raise InvalidImage("empty image: send JPEG or PNG bytes")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InvalidImage(
            f"cannot decode {len(data)} bytes as an image (starts with {data[:8].hex()}): "
            "send JPEG or PNG"
        )
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / np.iinfo(image.dtype).max)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return image


def raw_image(shape: list[int] | tuple[int, ...], data: bytes) -> np.ndarray:
    """A uint8 pixel array [H, W] or [H, W, C] (C is 1 or 3, RGB) from its shape and bytes."""
    shape = tuple(int(d) for d in shape)
    _check_image_shape(shape)
    return _pixels(shape, data, "raw image")


def raw_images(shape: list[int] | tuple[int, ...], data: bytes) -> np.ndarray:
    """N images of one shape, uint8 [N, H, W, C] (C is 1 or 3, RGB), from their shape and bytes
    (no copy: a read-only view of `data`)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4 or shape[0] < 0:
        raise InvalidImage(f"raw image batch shape {list(shape)} must be [N, H, W, C]")
    _check_image_shape(shape[1:])
    return _pixels(shape, data, "raw image batch")


def _check_image_shape(shape: tuple[int, ...]) -> None:
    if len(shape) not in (2, 3) or any(d <= 0 for d in shape):
        raise InvalidImage(f"raw image shape {list(shape)} must be [H, W] or [H, W, C]")
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise InvalidImage(f"raw image has {shape[2]} channels; expected 1 (gray) or 3 (RGB)")


def _pixels(shape: tuple[int, ...], data: bytes, what: str) -> np.ndarray:
    expected = int(np.prod(shape))
    if len(data) != expected:
        raise InvalidImage(
            f"{what} of shape {list(shape)} needs {expected} uint8 bytes, got {len(data)}"
        )
    return np.frombuffer(data, np.uint8).reshape(shape)


def prepare(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Colour-convert, resize the short side, centre-crop: uint8 [size, size, C]."""
    image = _to_color(image, spec.color)
    h, w = image.shape[:2]
    if (h, w) != (spec.size, spec.size):
        nh, nw = _resized(h, w, spec)
        if (nh, nw) != (h, w):
            interp = cv2.INTER_AREA if spec.resize_short < min(h, w) else cv2.INTER_LINEAR
            image = cv2.resize(image, (nw, nh), interpolation=interp)
        top, left = (nh - spec.size) // 2, (nw - spec.size) // 2
        image = image[top : top + spec.size, left : left + spec.size]
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image)


def _resized(h: int, w: int, spec: Preprocessing) -> tuple[int, int]:
    """The size `prepare` resizes an [h, w] image to before its centre crop."""
    scale = spec.resize_short / min(h, w)
    return max(spec.size, round(h * scale)), max(spec.size, round(w * scale))


def kept_region(h: int, w: int, spec: Preprocessing) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): the part of an [h, w] image that `prepare`'s centre crop
    keeps, in the image's own pixels (rounded), for models that crop and resize themselves."""
    if (h, w) == (spec.size, spec.size):
        return 0, 0, h, w  # `prepare` leaves it as it is
    nh, nw = _resized(h, w, spec)
    top, left = (nh - spec.size) // 2, (nw - spec.size) // 2
    y0, x0 = round(top * h / nh), round(left * w / nw)
    y1, x1 = round((top + spec.size) * h / nh), round((left + spec.size) * w / nw)
    return y0, x0, max(y1, y0 + 1), max(x1, x0 + 1)


def color_groups(
    images: Sequence[np.ndarray], spec: Preprocessing
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The images colour-converted but not resized, grouped by shape: (their indices, uint8
    [n, H, W, C]) per shape. An [N, H, W, C] array of the spec's channels is one group as it is."""
    channels = spec.shape[2]
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[3] == channels:
        return [(np.arange(len(images)), np.ascontiguousarray(images, np.uint8))]
    converted = [
        _to_color(image, spec.color).reshape(*image.shape[:2], channels) for image in images
    ]
    rows: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(converted):
        rows.setdefault(image.shape, []).append(i)
    return [(np.array(r), np.stack([converted[i] for i in r])) for r in rows.values()]


def prepare_batch(images: Sequence[np.ndarray], spec: Preprocessing) -> np.ndarray:
    """`prepare` for each image: uint8 [N, size, size, C]. An [N, H, W, C] array already of
    that shape is passed through as it is (no per-image work)."""
    if isinstance(images, np.ndarray) and images.shape[1:] == spec.shape:
        return np.ascontiguousarray(images, np.uint8)
    return np.stack([prepare(image, spec) for image in images])


def mirrored(images: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """Decoded images flipped left-right: an [N, H, W, C] array, or [H, W(, C)] images."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"mirrored takes [N, H, W, C] arrays, not {list(images.shape)}")
        return images[:, :, ::-1]
    return [image[:, ::-1] for image in images]


def with_mirrors(images: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """The images, then the same images mirrored (2N; an array stays one array)."""
    if isinstance(images, np.ndarray):
        return np.concatenate([images, mirrored(images)])
    return [*images, *mirrored(images)]


def _to_color(image: np.ndarray, color: str) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if color == "gray":
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
