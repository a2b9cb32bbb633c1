"""The client side of ClassifyStream: a request per item, at most `window` awaiting an answer,
each answer handed back with its item and round-trip time. `classify_stream` for blocking
channels (the client, `edge run`, the demo), `aio_classify_stream` for asyncio ones."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from typing import Generic, TypeVar

from edgecascade.v1 import cascade_pb2 as pb

T = TypeVar("T")
# The stub's method, `CascadeStub(channel).ClassifyStream`: requests in, responses out.
StreamCall = Callable[[Iterator[pb.ClassifyRequest]], Iterable[pb.ClassifyResponse]]
AioStreamCall = Callable[[AsyncIterator[pb.ClassifyRequest]], AsyncIterable[pb.ClassifyResponse]]


@dataclass(frozen=True)
class Answered(Generic[T]):
    item: T
    response: pb.ClassifyResponse
    round_trip_ms: float  # from handing the request to gRPC to receiving its answer


class _Pending(Generic[T]):
    """The items sent and not yet answered, by request id."""

    def __init__(self) -> None:
        self._sent: dict[str, tuple[T, float]] = {}

    def sent(self, item: T, message: pb.ClassifyRequest) -> None:
        self._sent[message.request_id] = (item, time.perf_counter())

    def answered(self, response: pb.ClassifyResponse) -> Answered[T]:
        item, sent_at = self._sent.pop(response.request_id)
        return Answered(item, response, (time.perf_counter() - sent_at) * 1e3)


def classify_stream(
    call: StreamCall,
    items: Iterable[T],
    request: Callable[[T], pb.ClassifyRequest],
    window: int,
) -> Generator[Answered[T], None, None]:
    """Send `request(item)` for each item, in order, through one ClassifyStream call and yield
    the answers as they come. The next item is taken only once fewer than `window` requests
    await an answer, so a producer behind `items` (a camera buffer, a pacing clock) sees the
    back-pressure. Request ids must be unique; an exception raised by `items` or `request` is
    raised here, after the answers to the items before it. Closing the iterator early lets
    gRPC's request thread go."""
    in_flight = threading.Semaphore(window)
    closed = threading.Event()
    pending = _Pending[T]()
    failure: list[Exception] = []  # raised here rather than in gRPC's request thread

    def requests() -> Iterator[pb.ClassifyRequest]:
        source = iter(items)
        while True:
            in_flight.acquire()
            if closed.is_set():
                return
            try:
                item = next(source)
                message = request(item)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - re-raised below, outside gRPC's thread
                failure.append(e)
                return
            pending.sent(item, message)
            yield message

    try:
        for response in call(requests()):
            answered = pending.answered(response)
            in_flight.release()
            yield answered
    finally:
        closed.set()
        in_flight.release()  # wakes the request thread should it wait for a free slot
    if failure:
        raise failure[0]


async def aio_classify_stream(
    call: AioStreamCall,
    items: Iterable[T] | AsyncIterable[T],
    request: Callable[[T], pb.ClassifyRequest],
    window: int,
) -> AsyncIterator[Answered[T]]:
    """`classify_stream` for a grpc.aio stub's method; `items` may be asynchronous."""
    in_flight = asyncio.Semaphore(window)
    pending = _Pending[T]()
    failure: list[Exception] = []  # raised here rather than inside grpc.aio's request task

    async def requests() -> AsyncIterator[pb.ClassifyRequest]:
        source = _asynchronous(items)
        while True:
            await in_flight.acquire()
            try:
                item = await anext(source)
                message = request(item)
            except StopAsyncIteration:
                return
            except Exception as e:  # noqa: BLE001 - re-raised below
                failure.append(e)
                return
            pending.sent(item, message)
            yield message

    async for response in call(requests()):
        answered = pending.answered(response)
        in_flight.release()
        yield answered
    if failure:
        raise failure[0]


async def _asynchronous(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
