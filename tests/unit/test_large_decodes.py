"""Large images are decoded on at most half the cores at once and small ones meanwhile (issue
12: four 9 MP JPEGs decoded at once on 2 cores held a 28x28 frame's answer up to 5 s); a small
request of raw pixels is read on the event loop, sparing a thread hop (issue 14), and an encoded
image never is (a 927-byte PNG with fuzzed chunks took libpng 1.7 s)."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from edgecascade.cloud.common import preprocessing
from edgecascade.cloud.common.preprocessing import (
    INLINE_DECODE_BYTES,
    LARGE_PIXELS,
    decode_image,
    decode_in_turn,
    raw_image,
)

SIDE = int(LARGE_PIXELS**0.5) + 1


def png(side: int) -> bytes:
    return cv2.imencode(".png", np.zeros((side, side), np.uint8))[1].tobytes()


def test_large_images_wait_their_turn_and_small_ones_do_not(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(preprocessing, "_large_work", ThreadPoolExecutor(1))
    real_imdecode = cv2.imdecode
    release = threading.Event()
    active, most = [0], [0]
    lock = threading.Lock()

    def imdecode(buffer: np.ndarray, flags: int) -> np.ndarray:
        large = preprocessing.image_size(buffer.tobytes()) == (SIDE, SIDE)
        if large:
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            assert release.wait(10)
        try:
            return real_imdecode(buffer, flags)
        finally:
            if large:
                with lock:
                    active[0] -= 1

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    with ThreadPoolExecutor(3) as pool:
        large = [pool.submit(decode_image, png(SIDE)) for _ in range(3)]
        while most[0] == 0:
            time.sleep(0.01)
        time.sleep(0.2)  # the other two are waiting their turn, not decoding
        assert most[0] == 1
        assert decode_image(png(28)).shape == (28, 28)  # meanwhile, at once
        release.set()
        assert [f.result(10).shape for f in large] == [(SIDE, SIDE)] * 3
    assert most[0] == 1


def test_a_request_meeting_a_large_image_is_decoded_in_the_pool_without_holding_a_thread(
    monkeypatch: pytest.MonkeyPatch,
):
    """The agent's decoding (decode_in_turn) gives its thread back when it meets a large image
    and runs again in the large images' pool: the threads that decode small images are never
    held waiting (a thread per waiting request grew the agent's threads through a soak)."""
    real_imdecode = cv2.imdecode
    decoded_on: list[tuple[int, str]] = []

    def imdecode(buffer: np.ndarray, flags: int) -> np.ndarray:
        height, _ = preprocessing.image_size(buffer.tobytes())
        decoded_on.append((height, threading.current_thread().name))
        return real_imdecode(buffer, flags)

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    small, large = png(28), png(SIDE)
    decoding = lambda: [decode_image(small), decode_image(large)]  # noqa: E731
    images = asyncio.run(decode_in_turn(decoding, len(small) + len(large)))
    assert [image.shape for image in images] == [(28, 28), (SIDE, SIDE)]
    assert [height for height, _ in decoded_on] == [28, 28, SIDE]  # the small one twice
    assert decoded_on[-1][1].startswith("large-images")
    assert not decoded_on[0][1].startswith(("MainThread", "large-images"))
    assert decode_image(large).shape == (SIDE, SIDE)  # elsewhere: waits for the pool


def decoded_where(monkeypatch: pytest.MonkeyPatch, sides: list[int], payload: int | None):
    """(side, thread name) of every cv2 decode made by decode_in_turn on PNGs of `sides`."""
    real_imdecode = cv2.imdecode
    decoded_on: list[tuple[int, str]] = []

    def imdecode(buffer: np.ndarray, flags: int) -> np.ndarray:
        image = real_imdecode(buffer, flags)
        decoded_on.append((len(image), threading.current_thread().name))
        return image

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    images = [png(side) for side in sides]
    decoded = asyncio.run(decode_in_turn(lambda: [decode_image(i) for i in images], payload))
    assert [image.shape for image in decoded] == [(side, side) for side in sides]
    return decoded_on


def test_a_small_request_of_raw_pixels_is_read_on_the_event_loop():
    where: list[str] = []

    def decoding() -> list[np.ndarray]:
        where.append(threading.current_thread().name)
        return [raw_image([28, 28], bytes(784))]

    assert asyncio.run(decode_in_turn(decoding, 800))[0].shape == (28, 28)
    assert where == ["MainThread"]
    assert asyncio.run(decode_in_turn(decoding, INLINE_DECODE_BYTES + 1))[0].shape == (28, 28)
    assert where[1] != "MainThread"  # more bytes: in a thread


@pytest.mark.parametrize(
    "payload",
    [
        1000,  # small, but encoded: its decode's time is not bounded by its size
        None,  # size unknown
        INLINE_DECODE_BYTES + 1,  # too many bytes
    ],
)
def test_encoded_images_are_decoded_in_a_thread(monkeypatch: pytest.MonkeyPatch, payload):
    where = decoded_where(monkeypatch, [28], payload)
    assert len(where) == 1 and where[0][1] != "MainThread"  # the header said so: decoded once
