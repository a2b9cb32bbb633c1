"""The client side of ClassifyStream: a request per item, at most `window` awaiting an answer,
each answer handed back with its item and round-trip time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from edgecascade.v1 import cascade_pb2 as pb

T = TypeVar("T")
# The stub's method, `CascadeStub(channel).ClassifyStream`: requests in, responses out.
StreamCall = Callable[[Iterator[pb.ClassifyRequest]], Iterable[pb.ClassifyResponse]]


@dataclass(frozen=True)
class Answered(Generic[T]):
    item: T
    response: pb.ClassifyResponse
    round_trip_ms: float  # from handing the request to gRPC to receiving its answer


def classify_stream(
    call: StreamCall,
    items: Iterable[T],
    request: Callable[[T], pb.ClassifyRequest],
    window: int,
) -> Iterator[Answered[T]]:
    """Send `request(item)` for each item, in order, through one ClassifyStream call and yield
    the answers as they come. The next item is taken only once fewer than `window` requests
    await an answer, so a producer behind `items` (a camera buffer, a pacing clock) sees the
    back-pressure. Request ids must be unique; an exception raised by `items` is raised here,
    after the answers to the items before it."""
    in_flight = threading.Semaphore(window)
    pending: dict[str, tuple[T, float]] = {}
    failure: list[Exception] = []  # raised here rather than in gRPC's request thread

    def requests() -> Iterator[pb.ClassifyRequest]:
        source = iter(items)
        while True:
            in_flight.acquire()
            try:
                item = next(source)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - re-raised below, outside gRPC's thread
                failure.append(e)
                return
            message = request(item)
            pending[message.request_id] = (item, time.perf_counter())
            yield message

    for response in call(requests()):
        item, sent_at = pending.pop(response.request_id)
        round_trip_ms = (time.perf_counter() - sent_at) * 1e3
        in_flight.release()
        yield Answered(item, response, round_trip_ms)
    if failure:
        raise failure[0]
