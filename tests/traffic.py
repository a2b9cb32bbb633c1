"""Steady camera traffic into an edge agent, every answer recorded with when it came: camera
streams (ClassifyStream) and unary Classify calls at a fixed rate, for fault and soak runs."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from edgecascade.edge.tools.samples import Frame
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc


@dataclass
class Outcome:
    at: float  # time.perf_counter() when the answer came
    tier: int = pb.EDGE
    degraded: str = ""  # DegradedReason name; "" when not degraded
    failure: str = ""  # a status code or a frame's error; "" when answered

    @classmethod
    def of(cls, response: pb.ClassifyResponse) -> Outcome:
        reason = response.degraded_reason_code
        return cls(
            time.perf_counter(),
            response.tier,
            pb.DegradedReason.Name(reason) if response.degraded else "",
            response.error.message if response.HasField("error") else "",
        )


@dataclass
class Traffic:
    """`streams` camera streams and `unary` callers, each sending one of `frames` every
    `interval_s` to the agent behind `channel` until `stop`; unary calls carry a gRPC deadline
    of `deadline_s`."""

    channel: grpc.Channel
    frames: list[Frame]
    streams: int = 1
    unary: int = 1
    interval_s: float = 0.02
    deadline_s: float = 1.0
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stub = pb_grpc.CascadeStub(self.channel)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._workers = [
            *(threading.Thread(target=self._stream, args=(i,)) for i in range(self.streams)),
            *(threading.Thread(target=self._calls, args=(i,)) for i in range(self.unary)),
        ]

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _requests(self, offset: int) -> Iterator[pb.ClassifyRequest]:
        i = offset
        while not self._done.is_set():
            yield pb.ClassifyRequest(encoded_image=self.frames[i % len(self.frames)].encoded)
            i += 1
            time.sleep(self.interval_s)

    def _stream(self, index: int) -> None:
        try:
            for response in self._stub.ClassifyStream(self._requests(index * 7), timeout=3600):
                self._record(Outcome.of(response))
        except grpc.RpcError as e:  # the whole stream ended: recorded as a failure
            self._record(Outcome(time.perf_counter(), failure=f"stream {e.code().name}"))

    def _calls(self, index: int) -> None:
        for request in self._requests(index * 13):
            try:
                response = self._stub.Classify(request, timeout=self.deadline_s)
                self._record(Outcome.of(response))
            except grpc.RpcError as e:
                self._record(Outcome(time.perf_counter(), failure=e.code().name))

    def start(self) -> Traffic:
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> list[Outcome]:
        self._done.set()
        for worker in self._workers:
            worker.join(30)
        return self.snapshot()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def summary(outcomes: list[Outcome]) -> dict[str, object]:
    """Answers, failures (with their codes or messages), cloud answers and degraded ones by
    reason."""
    return {
        "answers": len(outcomes),
        "failed": sum(bool(o.failure) for o in outcomes),
        "failures": dict(Counter(o.failure for o in outcomes if o.failure)),
        "cloud": sum(o.tier == pb.CLOUD for o in outcomes),
        "degraded": dict(Counter(o.degraded for o in outcomes if o.degraded)),
    }


def recovery_s(outcomes: list[Outcome], since: float) -> float | None:
    """Seconds from `since` to the first cloud answer after it (None: none came)."""
    back = [o.at for o in outcomes if o.at >= since and o.tier == pb.CLOUD and not o.failure]
    return min(back) - since if back else None
