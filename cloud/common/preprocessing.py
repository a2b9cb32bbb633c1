"""Decode and shape images the way a family's models expect them (shared by both tiers)."""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias, TypeVar, cast, overload

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.common.background import background_pool
from edgecascade.cloud.common.errors import InvalidInput
from edgecascade.cloud.common.manifest import Preprocessing

MAX_IMAGE_PIXELS = 40_000_000  # default bound on one image's pixels (declared or resized to)
MAX_PNG_CHUNKS = 65_536  # more chunks than any encoder writes for an image within the bound
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (C4 is DHT, C8 reserved, CC is DAC)
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

Image: TypeAlias = NDArray[np.uint8]
"""Decoded pixels: uint8 [H, W] (gray) or [H, W, C] (C is 1 or 3, RGB)."""
Images: TypeAlias = NDArray[np.uint8] | Sequence[NDArray[np.uint8]]
"""Decoded images: one uint8 [N, H, W, C] array, or a sequence of `Image`s."""

T = TypeVar("T")
INLINE_PIXELS = 1 << 20  # images with fewer pixels in all are prepared on the event loop
# A request of raw pixels of at most INLINE_DECODE_BYTES is read on the event loop (a copy at
# most); a thread hop costs ~55 us of CPU. Encoded images never are: a 927-byte PNG of 946 pixels
# with fuzzed chunks took libpng 1.7 s, so neither bytes nor pixels bound a decode's time.
INLINE_DECODE_BYTES = 1 << 16
# Images of LARGE_PIXELS or more (tens to hundreds of ms each) are decoded and prepared by a
# pool of half the cores' threads at a lower priority, so that the other calls' small images
# are handled meanwhile: four 9 MP JPEGs at once on 2 cores held a 28x28 frame's answer 5 s.
LARGE_PIXELS = 1 << 22
_large_work = background_pool(max(1, (os.cpu_count() or 1) // 2), "large-images")


# Where a decoding runs (`decode_in_turn`), an image of this many pixels or more raises
# LargeImage to move the decoding on; None: a caller outside it, whose large images wait for the
# pool to decode them.
_defer_from: ContextVar[float | None] = ContextVar("defer_from", default=None)


class LargeImage(Exception):
    """An image more than the place a decoding runs in takes (`decode_in_turn`)."""


_max_pixels: ContextVar[int] = ContextVar("max_image_pixels", default=MAX_IMAGE_PIXELS)


class InvalidImage(InvalidInput):
    """The input is not an image this system can read; the message says why."""


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Within the block (this context, and threads started from it with asyncio.to_thread),
    images above `max_pixels` are refused, as declared or once resized."""
    token = _max_pixels.set(max_pixels)
    try:
        yield
    finally:
        _max_pixels.reset(token)


def max_pixels() -> int:
    """The pixel bound in force (see `pixel_limit`)."""
    return _max_pixels.get()


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) an encoded PNG or JPEG declares in its header, read without decoding it;
    InvalidImage for other formats and for headers that are corrupt or truncated."""
    if data.startswith(PNG_SIGNATURE):
        return _png_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    raise InvalidImage(
        f"cannot decode {len(data)} bytes as an image (starts with {data[:8].hex()}): "
        "send JPEG or PNG"
    )


def _png_size(data: bytes) -> tuple[int, int]:
    """IHDR's size, after checking that every chunk's declared length fits the payload and that
    IEND, empty, ends the image data. (cv2 reads on past an IEND that comes before any IDAT: a
    garbage length after one made it spend 1-3 s and gigabytes on a 75-byte PNG.)"""
    size, pos, chunks, image_data = None, len(PNG_SIGNATURE), 0, False
    while pos < len(data):
        if pos + 8 > len(data):
            raise InvalidImage(f"truncated PNG: {len(data) - pos} stray bytes after chunk {chunks}")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        if length > len(data) - pos - 12:
            raise InvalidImage(
                f"corrupt PNG: chunk {name!r} declares {length} bytes but only "
                f"{max(0, len(data) - pos - 12)} follow"
            )
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InvalidImage(f"corrupt PNG: more than {MAX_PNG_CHUNKS} chunks")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise InvalidImage("corrupt PNG: the first chunk is not a 13-byte IHDR")
            width, height = struct.unpack_from(">II", data, pos + 8)
            if not (0 < width < 2**31 and 0 < height < 2**31):
                raise InvalidImage(f"corrupt PNG: IHDR declares {width}x{height} pixels")
            size = (height, width)
            _check_pixels(height, width)
        pos += 12 + length
        image_data |= kind == b"IDAT"
        if kind == b"IEND":
            if length or not image_data:
                raise InvalidImage(
                    f"corrupt PNG: IEND after chunk {chunks - 1} "
                    + (f"declares {length} bytes (it has none)" if length else "before any IDAT")
                )
            break
    if size is None:
        raise InvalidImage("truncated PNG: no IHDR chunk")
    return size


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """The size in the first start-of-frame segment, walking the segments before it."""
    pos = 2
    while True:
        while pos + 1 < len(data) and data[pos] == data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > len(data):
            raise InvalidImage("truncated JPEG: no frame header (SOF)")
        if data[pos] != 0xFF:
            raise InvalidImage(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: before any frame header
            raise InvalidImage("corrupt JPEG: no frame header (SOF) before the image data")
        if pos + 4 > len(data):
            raise InvalidImage("truncated JPEG: a segment header is cut off")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > len(data):
            raise InvalidImage(
                f"corrupt JPEG: segment FF{marker:02X} declares {length} bytes but only "
                f"{len(data) - pos - 2} follow"
            )
        if marker in JPEG_SOF:
            if length < 8:
                raise InvalidImage("corrupt JPEG: frame header too short")
            height, width, components = struct.unpack_from(">HHB", data, pos + 5)
            if height == 0 or width == 0:
                raise InvalidImage(f"unsupported JPEG: frame header declares {width}x{height}")
            if components not in (1, 3, 4):
                raise InvalidImage(f"unsupported JPEG: {components} components")
            _check_pixels(height, width)
            return height, width
        pos += 2 + length


def _check_pixels(height: int, width: int, what: str = "image") -> None:
    limit = max_pixels()
    if height * width > limit:
        raise InvalidImage(
            f"{what} is {width}x{height} pixels ({height * width / 1e6:.1f} MP); the limit is "
            f"{limit / 1e6:g} MP (max_image_pixels)"
        )


def decode_image(data: bytes) -> Image:
    """Decode JPEG/PNG bytes into uint8 RGB [H, W, 3] or gray [H, W]. The header's size is
    checked against `max_pixels()` first; corrupt or truncated headers are refused. Images of
    LARGE_PIXELS or more are decoded by the large images' pool."""
    if not data:
        raise InvalidImage("empty image: send JPEG or PNG bytes")
    defer_from = _defer_from.get()
    if defer_from == 0:  # on the event loop: not even its header is read there
        raise LargeImage("an encoded image")
    size = image_size(data)
    pixels = size[0] * size[1]
    if defer_from is None:
        if pixels < LARGE_PIXELS:
            return _decoded(data, size)
        return _large_work.submit(contextvars.copy_context().run, _decoded, data, size).result()
    if pixels >= defer_from:
        raise LargeImage(f"{size[1]}x{size[0]} pixels")
    return _decoded(data, size)


def _deferring(defer_from: float, decoding: Callable[[], T]) -> Callable[[], T]:
    """`decoding` to run in a context of its own that defers images of `defer_from` pixels."""
    context = contextvars.copy_context()
    context.run(_defer_from.set, defer_from)
    return lambda: context.run(decoding)


async def decode_in_turn(decoding: Callable[[], T], payload_bytes: int | None) -> T:
    """`decoding()` (decode_image calls) where it costs the least without holding up other
    calls: on the event loop when the request is small raw pixels (`payload_bytes` at most
    INLINE_DECODE_BYTES, no encoded image; None: unknown, never), else in a thread, and in the
    large images' pool once it meets an image of LARGE_PIXELS or more. A
    decoding that meets more than its place takes runs again from the start in the next one,
    so no thread is held waiting for the pool."""
    if payload_bytes is not None and payload_bytes <= INLINE_DECODE_BYTES:
        try:
            return _deferring(0, decoding)()  # no encoded image here
        except LargeImage:
            pass
    try:
        return await asyncio.to_thread(_deferring(LARGE_PIXELS, decoding))
    except LargeImage:
        work = _deferring(math.inf, decoding)
        return await asyncio.wrap_future(_large_work.submit(work))


def _decoded(data: bytes, size: tuple[int, int]) -> Image:
    try:
        # cv2's stubs say "not None", but imdecode returns None for bytes it cannot decode
        image: cv2.typing.MatLike | None = cv2.imdecode(
            np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED
        )
    except cv2.error as e:
        raise InvalidImage(f"cannot decode {len(data)} bytes as an image: {e.err}") from None
    if image is None or image.shape[:2] != size:
        raise InvalidImage(
            f"cannot decode {len(data)} bytes as an image (starts with {data[:8].hex()}): "
            "send JPEG or PNG"
        )
    if image.dtype != np.uint8:  # 16-bit: PNG and JPEG decode to unsigned integers
        depth = np.iinfo(cast("np.dtype[np.unsignedinteger[Any]]", image.dtype))
        image = cv2.convertScaleAbs(image, alpha=255.0 / depth.max)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return from_cv2(image)


def from_cv2(image: cv2.typing.MatLike) -> Image:
    """A cv2 result on uint8 pixels, which is uint8 again, typed as such (cv2's stubs type every
    result as any numeric matrix)."""
    return cast(Image, image)


def raw_image(shape: Sequence[int], data: bytes) -> Image:
    """A uint8 pixel array [H, W] or [H, W, C] (C is 1 or 3, RGB) from its shape and bytes."""
    shape = tuple(int(d) for d in shape)
    _check_image_shape(shape)
    return _pixels(shape, data, "raw image")


def raw_images(shape: Sequence[int], data: bytes) -> NDArray[np.uint8]:
    """N images of one shape, uint8 [N, H, W, C] (C is 1 or 3, RGB), from their shape and bytes
    (no copy: a read-only view of `data`)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4 or shape[0] <= 0:
        raise InvalidImage(f"raw image batch shape {list(shape)} must be [N, H, W, C]")
    _check_image_shape(shape[1:])
    return _pixels(shape, data, "raw image batch")


def _check_image_shape(shape: tuple[int, ...]) -> None:
    if len(shape) not in (2, 3) or any(d <= 0 for d in shape):
        raise InvalidImage(f"raw image shape {list(shape)} must be [H, W] or [H, W, C]")
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise InvalidImage(f"raw image has {shape[2]} channels; expected 1 (gray) or 3 (RGB)")


def _pixels(shape: tuple[int, ...], data: bytes, what: str) -> NDArray[np.uint8]:
    expected = math.prod(shape)  # Python ints: no wrap-around
    if len(data) != expected:
        raise InvalidImage(
            f"{what} of shape {list(shape)} needs {expected} uint8 bytes, got {len(data)}"
        )
    return np.frombuffer(data, np.uint8).reshape(shape)


def prepare(image: Image, spec: Preprocessing) -> Image:
    """Colour-convert, resize the short side, centre-crop: uint8 [size, size, C]."""
    image = _to_color(image, spec.color)
    h, w = image.shape[:2]
    if (h, w) != (spec.size, spec.size):
        nh, nw = _resized(h, w, spec)
        if (nh, nw) != (h, w):
            interp = cv2.INTER_AREA if spec.resize_short < min(h, w) else cv2.INTER_LINEAR
            image = from_cv2(cv2.resize(image, (nw, nh), interpolation=interp))
        top, left = (nh - spec.size) // 2, (nw - spec.size) // 2
        image = image[top : top + spec.size, left : left + spec.size]
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image)


def _resized(h: int, w: int, spec: Preprocessing) -> tuple[int, int]:
    """The size `prepare` resizes an [h, w] image to before its centre crop."""
    scale = spec.resize_short / min(h, w)
    nh, nw = max(spec.size, round(h * scale)), max(spec.size, round(w * scale))
    if nh * nw > max_pixels():  # a very thin image: its short side scaled up
        raise InvalidImage(
            f"image of {w}x{h} pixels would be resized to {nw}x{nh} before its centre crop; "
            f"the limit is {max_pixels() / 1e6:g} MP (max_image_pixels)"
        )
    return nh, nw


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


def color_groups(images: Images, spec: Preprocessing) -> list[tuple[NDArray[np.intp], Image]]:
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


def prepare_batch(images: Images, spec: Preprocessing) -> NDArray[np.uint8]:
    """`prepare` for each image: uint8 [N, size, size, C]. An [N, H, W, C] array already of
    that shape is passed through as it is (no per-image work)."""
    if isinstance(images, np.ndarray) and images.shape[1:] == spec.shape:
        return np.ascontiguousarray(images, np.uint8)
    return np.stack([prepare(image, spec) for image in images])


@overload
def mirrored(images: NDArray[np.uint8]) -> NDArray[np.uint8]: ...
@overload
def mirrored(images: Sequence[Image]) -> list[Image]: ...
def mirrored(images: Images) -> Images:
    """Decoded images flipped left-right: an [N, H, W, C] array, or [H, W(, C)] images."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"mirrored takes [N, H, W, C] arrays, not {list(images.shape)}")
        return images[:, :, ::-1]
    return [image[:, ::-1] for image in images]


@overload
def with_mirrors(images: NDArray[np.uint8]) -> NDArray[np.uint8]: ...
@overload
def with_mirrors(images: Sequence[Image]) -> list[Image]: ...
def with_mirrors(images: Images) -> Images:
    """The images, then the same images mirrored (2N; an array stays one array)."""
    if isinstance(images, np.ndarray):
        return np.concatenate([images, mirrored(images)])
    return [*images, *mirrored(images)]


def pixel_count(images: Images) -> int:
    """Pixels (values) in decoded images: an [N, H, W, C] array or a list of images."""
    if isinstance(images, np.ndarray):
        return images.size
    return sum(image.size for image in images)


async def off_loop(images: Images, work: Callable[..., T], *args: object) -> T:
    """`work(*args)` on `images`: in a thread when they are large, so that the event loop
    answers other calls meanwhile (in the pool for LARGE_PIXELS or more, in its turn); at once
    when small (a thread hop costs more)."""
    pixels = pixel_count(images)
    if pixels < INLINE_PIXELS:
        return work(*args)
    if pixels < LARGE_PIXELS:
        return await asyncio.to_thread(work, *args)
    context = contextvars.copy_context()
    return await asyncio.wrap_future(_large_work.submit(context.run, work, *args))


def _to_color(image: Image, color: str) -> Image:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if color == "gray":
        return image if image.ndim == 2 else from_cv2(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    return image if image.ndim == 3 else from_cv2(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
