"""Images checked from their headers before decoding (issue 12): declared size against the pixel
limit, PNG chunk lengths against the payload, truncated and corrupt headers; raw shapes whose
products overflow 64-bit integers."""

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from edgecascade.cloud.common.manifest import Preprocessing
from edgecascade.cloud.common.preprocessing import (
    InvalidImage,
    decode_image,
    image_size,
    pixel_limit,
    prepare,
    raw_image,
    raw_images,
)
from edgecascade.edge.serving.kserve import images_of
from tests.unit.test_kserve_requests import request

GRAY = (np.arange(40 * 60) % 256).astype(np.uint8).reshape(40, 60)
PNG = cv2.imencode(".png", GRAY)[1].tobytes()
JPEG = cv2.imencode(".jpg", cv2.cvtColor(GRAY, cv2.COLOR_GRAY2BGR))[1].tobytes()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose IHDR declares width x height (gray, 8 bits): what a
    deflate-compressed huge blank image looks like before decoding."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1024))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """The real JPEG with its frame header (SOF0) saying width x height."""
    sof = JPEG.index(b"\xff\xc0")
    return JPEG[: sof + 5] + struct.pack(">HH", height, width) + JPEG[sof + 9 :]


def test_valid_images_pass_with_their_declared_size():
    assert image_size(PNG) == (40, 60) and image_size(JPEG) == (40, 60)
    assert decode_image(PNG).shape == (40, 60) and decode_image(JPEG).shape == (40, 60, 3)
    with pixel_limit(40 * 60):
        decode_image(PNG)  # exactly at the limit


@pytest.mark.parametrize("data", [png_declaring(30000, 30000), jpeg_declaring(60000, 60000)])
def test_a_huge_declared_size_is_refused_before_decoding(data):
    started = time.perf_counter()
    with pytest.raises(InvalidImage, match=r"image is \d+x\d+ pixels .* the limit is 40 MP"):
        decode_image(data)
    assert time.perf_counter() - started < 0.5  # nothing was decoded or allocated


def test_the_limit_is_configurable():
    with pixel_limit(1000), pytest.raises(InvalidImage, match="60x40 pixels.*limit is 0.001 MP"):
        decode_image(PNG)
    with pixel_limit(1000), pytest.raises(InvalidImage, match="limit is 0.001 MP"):
        decode_image(JPEG)


def test_opencvs_own_limit_is_an_invalid_image_not_a_crash():
    with pixel_limit(2**40), pytest.raises(InvalidImage, match="cannot decode"):
        decode_image(png_declaring(40000, 40000))  # cv2 refuses it: still one clean error


@pytest.mark.parametrize(
    ("data", "match"),
    [
        # the 16 bytes: a chunk declaring 0xfffffff0 bytes (cv2 allocated 4.3 GB)
        (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 0xFFFFFFF0) + b"IHDR", "declares 4294967280"),
        (PNG[:8] + chunk(b"IHDR", b"\0" * 13)[:-4] + b"IDAT" * 2, "declares"),
        (PNG[: len(PNG) // 2], "truncated PNG|declares"),
        (PNG[:20], "declares 13 bytes"),
        (PNG[:8], "no IHDR"),
        (PNG[:8] + chunk(b"IDAT", b"x") + PNG[8:], "first chunk is not a 13-byte IHDR"),
        # IEND before any IDAT, then a chunk declaring 3.9 GB: cv2 read on past that IEND
        # (2 s and gigabytes for 75 bytes, found by the fuzzing)
        (
            PNG[:33] + chunk(b"IEND", b"") + struct.pack(">I", 3_899_020_064) + b"A\xd5\0\0",
            "before any IDAT",
        ),
        (png_declaring(8, 8)[:-12] + chunk(b"IEND", b"x"), "IEND after chunk 2 declares 1 bytes"),
        (png_declaring(0, 10), "declares 0x10 pixels"),
        (png_declaring(2**31, 10), "declares 2147483648x10"),
        (JPEG[:2], "truncated JPEG"),
        (JPEG[:30], "truncated JPEG|declares"),
        (JPEG[: JPEG.index(b"\xff\xc0") + 6], "declares 17 bytes"),
        (b"\xff\xd8\xff\xda\0\x02", "no frame header"),
        (b"\xff\xd8garbage", "no marker"),
        (jpeg_declaring(60, 0), "declares 60x0"),
        (b"GIF89a" + b"\0" * 20, "send JPEG or PNG"),
    ],
)
def test_corrupt_or_truncated_headers_are_refused(data, match):
    with pytest.raises(InvalidImage, match=match):
        decode_image(data)


def test_a_very_thin_image_is_refused_before_resizing():
    spec = Preprocessing(size=28, resize_short=28, color="gray")
    with pytest.raises(InvalidImage, match="would be resized to"):
        prepare(np.zeros((1, 2_000_000), np.uint8), spec)  # 28 x 56M pixels once resized


@pytest.mark.parametrize(
    "shape", [[2**32, 2**32], [2**32, 2**32, 1], [2**63, 2, 1], [0, 4], [4, -4, 3], [4, 4, 4]]
)
def test_raw_shapes_that_overflow_or_make_no_sense(shape):
    with pytest.raises(InvalidImage):
        raw_image(shape, b"")


def test_raw_batches_whose_pixel_count_wraps_to_zero():
    with pytest.raises(InvalidImage, match="needs 18446744073709551616 uint8 bytes, got 0"):
        raw_images([1, 2**32, 2**32, 1], b"")
    with pytest.raises(InvalidImage, match="needs 18446744073709551616 bytes, got 0"):
        images_of(request("pixels", "UINT8", [1, 2**32, 2**32, 1], b""), max_batch=4)
    with pytest.raises(InvalidImage, match="needs 18446744073709551616 elements"):
        images_of(request("image", "BYTES", [2**32, 2**32], bytes_contents=[]), max_batch=4)
