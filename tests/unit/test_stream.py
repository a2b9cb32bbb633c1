"""The ClassifyStream client loop against a stand-in for the stub's method that, like gRPC,
reads requests on its own thread as far ahead as the loop lets it."""

import queue
import threading
import time
from collections.abc import Iterable, Iterator

import pytest

from edgecascade.edge.tools.stream import classify_stream
from edgecascade.v1 import cascade_pb2 as pb


class ReadAhead:
    """Answers each request after `delay_s`, echoing its id; records the most requests it
    held unanswered at once."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.most_unanswered = 0
        self._sent = self._answered = 0
        self._lock = threading.Lock()

    def __call__(self, requests: Iterator[pb.ClassifyRequest]) -> Iterable[pb.ClassifyResponse]:
        arrived: queue.Queue[pb.ClassifyRequest | None] = queue.Queue()

        def read() -> None:
            for request in requests:
                with self._lock:
                    self._sent += 1
                    self.most_unanswered = max(self.most_unanswered, self._sent - self._answered)
                arrived.put(request)
            arrived.put(None)

        threading.Thread(target=read, daemon=True).start()
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
