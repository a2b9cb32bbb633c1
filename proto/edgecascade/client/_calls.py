"""What the blocking and the asyncio client share: the caller's arguments checked, before any
call, and turned into requests and a transport."""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from edgecascade.cloud.common.auth import TOKEN
from edgecascade.cloud.common.transport import Tls, Transport
from edgecascade.v1 import cascade_pb2 as pb

# An encoded image (JPEG or PNG), or uint8 pixels: HW, HWC or NHWC with N = 1, C in {1, 3}.
Image: TypeAlias = bytes | npt.NDArray[np.uint8]
# What makes each frame's request in a stream.
Requests: TypeAlias = Callable[[Image], pb.ClassifyRequest]
MAX_TOP_K = 2**32 - 1  # the wire's uint32


def transport(tls: Tls | None, token: str | None) -> Transport:
    if token is None:
        return Transport(tls=tls)
    if not TOKEN.fullmatch(token):
        raise ValueError("token: expected the bearer token itself (16-512 base64url characters)")
    return Transport(tls=tls, metadata=(("authorization", f"Bearer {token}"),))


def timeout(client_timeout: float | None) -> float | None:
    """gRPC's timeout in seconds (None: wait as long as it takes)."""
    if client_timeout is not None and not client_timeout > 0:
        raise ValueError(f"client_timeout: expected seconds > 0 or None, got {client_timeout}")
    return client_timeout


def window(frames: int) -> int:
    if frames < 1:
        raise ValueError(f"window: expected at least 1 frame awaiting an answer, got {frames}")
    return frames


def requests(top_k: int, deadline_ms: float | None) -> Requests:
    """The request of each frame of a stream, numbered under an id of the stream's own."""
    check_options(top_k, deadline_ms)
    stream_id = uuid.uuid4().hex[:12]
    numbers = itertools.count()
    return lambda image: request(
        image, top_k=top_k, deadline_ms=deadline_ms, request_id=f"{stream_id}-{next(numbers)}"
    )


def check_options(top_k: int, deadline_ms: float | None) -> None:
    if not 0 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k: expected 0 (the agent's default) or more classes, got {top_k}")
    if deadline_ms is not None and not (deadline_ms > 0 and math.isfinite(deadline_ms)):
        raise ValueError(f"deadline_ms: expected milliseconds > 0 or None, got {deadline_ms}")


def request(
    image: object, *, top_k: int, deadline_ms: float | None, request_id: str
) -> pb.ClassifyRequest:
    """`image` is checked here since callers may pass anything."""
    check_options(top_k, deadline_ms)
    message = pb.ClassifyRequest(request_id=request_id, top_k=top_k, deadline_ms=deadline_ms or 0)
    if isinstance(image, bytes):
        if not image:
            raise ValueError("image: the encoded image is empty")
        message.encoded_image = image
    elif isinstance(image, np.ndarray):
        pixels = _pixels(image)
        message.raw_image.shape[:] = pixels.shape
        message.raw_image.data = pixels.tobytes()
    else:
        raise TypeError(f"image: expected encoded bytes or a numpy array, got {type(image)}")
    return message


def _pixels(image: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """HW or HWC pixels, checked (NHWC with N = 1 loses its N)."""
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(
                f"image: an NHWC array holds one image here, got {image.shape[0]}; "
                "send several through classify_stream"
            )
        image = image[0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"image: expected HW, HWC or NHWC pixels with C 1 or 3, got {image.shape}")
    if image.size == 0:
        raise ValueError(f"image: the array of shape {image.shape} holds no pixels")
    return image
