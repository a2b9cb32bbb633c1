"""What the agent's gRPC services share: request errors as status codes, in-order streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from cloud.preprocessing import InvalidImage
from edge.limits import Overloaded

Request = TypeVar("Request")
Response = TypeVar("Response")

# Errors that are the caller's to fix or retry (anything else is a bug: UNKNOWN).
STATUS_CODES: dict[type[Exception], grpc.StatusCode] = {
    InvalidImage: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    LookupError: grpc.StatusCode.NOT_FOUND,
}
RequestError = tuple(STATUS_CODES)


def deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's gRPC deadline as a time.perf_counter() value (None: the caller set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.perf_counter() + remaining


def status_code(error: Exception) -> grpc.StatusCode:
    return next(code for kind, code in STATUS_CODES.items() if isinstance(error, kind))


async def ordered(
    requests: AsyncIterator[Request],
    handle: Callable[[Request], Awaitable[Response]],
    window: int,
) -> AsyncIterator[Response]:
    """Answer a stream's requests concurrently (up to `window` at once), in arrival order."""
    pending: asyncio.Queue[asyncio.Task | None] = asyncio.Queue(window)

    async def read() -> None:
        async for request in requests:
            await pending.put(asyncio.create_task(handle(request)))
        await pending.put(None)

    reader = asyncio.create_task(read())
    try:
        while (task := await pending.get()) is not None:
            yield await task
        await reader
    finally:
        reader.cancel()
        while not pending.empty():
            if task := pending.get_nowait():
                task.cancel()
