"""The ClassifyStream client loops against stand-ins for the stub's method that, like gRPC,
read requests on their own thread (or task) as far ahead as the loop lets them."""

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import pytest

from edgecascade.client.stream import aio_classify_stream, classify_stream
from edgecascade.cloud.common.launcher import wait_until
from edgecascade.v1 import cascade_pb2 as pb


class ReadAhead:
    """Answers each request after `delay_s`, echoing its id; records the most requests it
    held unanswered at once."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.most_unanswered = 0
        self.sent = self._answered = 0
        self._lock = threading.Lock()

    def __call__(self, requests: Iterator[pb.ClassifyRequest]) -> Iterable[pb.ClassifyResponse]:
        arrived: queue.Queue[pb.ClassifyRequest | None] = queue.Queue()

        def read() -> None:
            for request in requests:
                with self._lock:
                    self.sent += 1
                    self.most_unanswered = max(self.most_unanswered, self.sent - self._answered)
                arrived.put(request)
            arrived.put(None)

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        while (request := arrived.get()) is not None:
            time.sleep(self.delay_s)
            with self._lock:
                self._answered += 1
            yield pb.ClassifyResponse(
                request_id=request.request_id, edge_class_id=len(request.request_id)
            )


def request(item: str) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(request_id=item)


@pytest.mark.parametrize("window", [1, 3])
def test_answers_come_with_their_items_and_at_most_window_await_an_answer(window: int) -> None:
    call = ReadAhead(delay_s=0.005)
    items = [f"frame-{'x' * i}" for i in range(20)]
    answers = list(classify_stream(call, items, request, window))
    assert [a.item for a in answers] == items
    assert all(a.response.request_id == a.item for a in answers)
    assert all(a.response.edge_class_id == len(a.item) for a in answers)
    assert all(a.round_trip_ms >= 5.0 for a in answers)
    assert call.most_unanswered == window


def test_a_failing_producer_is_raised_after_the_answers_to_what_it_produced() -> None:
    def frames() -> Iterator[str]:
        yield from ("a", "b", "c")
        raise OSError("camera unplugged")

    answered = []
    with pytest.raises(OSError, match="camera unplugged"):
        for answer in classify_stream(ReadAhead(delay_s=0.0), frames(), request, 2):
            answered.append(answer.item)
    assert answered == ["a", "b", "c"]


def test_a_failing_request_is_raised_after_the_answers_before_it() -> None:
    def strict(item: str) -> pb.ClassifyRequest:
        if item == "bad":
            raise ValueError("not a frame")
        return request(item)

    answered = []
    with pytest.raises(ValueError, match="not a frame"):
        for answer in classify_stream(ReadAhead(delay_s=0.0), ["a", "b", "bad", "c"], strict, 1):
            answered.append(answer.item)
    assert answered == ["a", "b"]


def test_leaving_a_stream_early_lets_the_request_thread_go() -> None:
    call = ReadAhead(delay_s=0.0)
    answers = classify_stream(call, (f"frame-{i}" for i in range(100)), request, 2)
    assert next(answers).item == "frame-0"
    # the freed slot is taken: the request thread waits for the next one
    assert wait_until(lambda: call.sent == 3, timeout_s=5)
    answers.close()
    call.reader.join(timeout=5)
    assert not call.reader.is_alive()


class AioReadAhead:
    """ReadAhead for grpc.aio: reads the async requests in a task of its own."""

    def __init__(self) -> None:
        self.most_unanswered = 0
        self._sent = self._answered = 0

    async def __call__(
        self, requests: AsyncIterator[pb.ClassifyRequest]
    ) -> AsyncIterator[pb.ClassifyResponse]:
        arrived: asyncio.Queue[pb.ClassifyRequest | None] = asyncio.Queue()

        async def read() -> None:
            async for message in requests:
                self._sent += 1
                self.most_unanswered = max(self.most_unanswered, self._sent - self._answered)
                arrived.put_nowait(message)
            arrived.put_nowait(None)

        reader = asyncio.create_task(read())
        while (message := await arrived.get()) is not None:
            await asyncio.sleep(0.002)
            self._answered += 1
            yield pb.ClassifyResponse(request_id=message.request_id)
        await reader


async def produced(items: Iterable[str]) -> AsyncIterable[str]:
    for item in items:
        await asyncio.sleep(0)
        yield item
        if item == "c":
            raise OSError("camera unplugged")


@pytest.mark.parametrize("window", [1, 3])
def test_the_asyncio_loop_answers_in_order_within_the_window(window: int) -> None:
    call = AioReadAhead()
    items = [f"frame-{i}" for i in range(20)]

    async def main() -> list[str]:
        return [a.item async for a in aio_classify_stream(call, items, request, window)]

    assert asyncio.run(main()) == items
    assert call.most_unanswered == window


def test_the_asyncio_loop_takes_async_items_and_raises_their_failure_last() -> None:
    answered = []

    async def main() -> None:
        async for answer in aio_classify_stream(AioReadAhead(), produced("abcd"), request, 2):
            answered.append(answer.response.request_id)

    with pytest.raises(OSError, match="camera unplugged"):
        asyncio.run(main())
    assert answered == ["a", "b", "c"]
