"""The fuzzing's bystander: a client in a process of its own (as another client of an agent
would be; in the fuzzer's process it also waited whenever hypothesis held that process) that
sends a valid frame every 50 ms, alone for a while and then until told to stop, and says how
long its calls waited."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import grpc
import numpy as np

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.reliability.strategies import encoded

SLOW_MS = 100.0  # the goal: no bystander call waits longer
SLOW_KEPT = 200  # slow calls listed in the report, the first ones
Figures = dict[str, list[Any]]


def run(address: str, alone_s: float, stop: Event, results: Queue[tuple[str, Any]]) -> None:
    """Call the agent at `address` alone for `alone_s`, then until `stop`: ("alone", summary)
    and ("fuzzing", summary) into `results`."""
    frame = encoded(np.zeros((28, 28), np.uint8), "png")
    with PLAINTEXT.channel(address) as channel:
        stub = pb_grpc.CascadeStub(channel)
        call = partial(stub.Classify, pb.ClassifyRequest(encoded_image=frame), timeout=10)
        alone_done = threading.Event()
        threading.Timer(alone_s, alone_done.set).start()
        results.put(("alone", summary(waits(alone_done.wait, call))))
        results.put(("fuzzing", summary(waits(stop.wait, call))))


def waits(done: Callable[[float], bool], call: Callable[[], pb.ClassifyResponse]) -> Figures:
    """`call` every 50 ms until `done`: its waits (ms), the codes of those that failed, and for
    calls over SLOW_MS when they started (Unix time) and where the time went (the agent's own
    timings of the request)."""
    figures: Figures = {"waited": [], "failed": [], "slow": []}
    while not done(0.05):
        started = time.perf_counter()
        try:
            answer = call()
        except grpc.RpcError as e:
            figures["failed"].append(e.code().name)
            continue
        waited = (time.perf_counter() - started) * 1e3
        figures["waited"].append(waited)
        if waited > SLOW_MS and len(figures["slow"]) < SLOW_KEPT:
            timings = answer.timings
            figures["slow"].append(
                {
                    "at": round(time.time() - waited / 1e3, 2),  # Unix time it started
                    "ms": round(waited, 1),
                    "agent_total_ms": round(timings.total_ms, 1),
                    "edge_ms": round(timings.edge_ms, 1),
                    "cloud_ms": round(timings.cloud_ms, 1),
                }
            )
    return figures


def summary(figures: Figures) -> dict[str, Any]:
    """What the report says of a bystander's calls: count, failures, p50, p99, max, how many
    over SLOW_MS and the first of those."""
    waited = figures["waited"]
    return {
        "calls": len(waited),
        "failed": figures["failed"],
        **(
            {q: round(float(np.percentile(waited, p)), 2) for q, p in (("p50", 50), ("p99", 99))}
            if waited
            else {}
        ),
        "max": round(max(waited, default=0.0), 2),
        "over_100ms": sum(w > SLOW_MS for w in waited),
        "slow_calls": figures["slow"],
    }
