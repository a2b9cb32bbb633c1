"""The reliability suite runs against real edge agents in front of the integration tests'
Triton; what it tried and got back goes into one report for the session."""

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import numpy as np
import pytest

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.integration.conftest import (  # noqa: F401 (fixtures used by this folder's tests)
    fashion_manifest,
    fashion_repository,
    triton,
)
from tests.reliability.report import Report, agent_figures
from tests.reliability.strategies import encoded


@pytest.fixture(scope="session")
def agent(triton, fashion_manifest, tmp_path_factory) -> Iterator[EdgeProcess]:  # noqa: F811
    """The agent measured (memory, a bystander's waits), with the Triton behind it."""
    log = tmp_path_factory.mktemp("reliability") / "edge.log"
    with EdgeProcess("fashion", triton.grpc_url, log) as edge:
        yield edge


@pytest.fixture(scope="session")
def edge_only(fashion_manifest, tmp_path_factory) -> Iterator[EdgeProcess]:  # noqa: F811
    """An agent without a cloud: every escalation is answered degraded."""
    log = tmp_path_factory.mktemp("reliability") / "edge-only.log"
    with EdgeProcess("fashion", None, log) as edge:
        yield edge


@pytest.fixture(scope="session")
def report() -> Iterator[Report]:
    """The session's report, written when the session ends."""
    report = Report()
    yield report
    written = report.write()
    if written:
        print(f"\nreliability report: {written}")


ALONE_S = 10.0  # the bystander's calls before the fuzzing: the machine's own noise
SLOW_MS = 100.0  # the goal: no bystander call waits longer
SLOW_KEPT = 200  # slow calls listed in the report, the first ones


def waits(
    figures: dict[str, list], done: threading.Event, call: Callable[[], pb.ClassifyResponse]
) -> None:
    """`call` every 50 ms until `done`: its waits (ms) into figures["waited"], the codes of
    those that failed into figures["failed"], and for calls over SLOW_MS when they started (Unix
    time) and where the time went (the agent's own timings of the request) into figures["slow"]."""
    while not done.wait(0.05):
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


def summary(figures: dict[str, list]) -> dict[str, Any]:
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


@pytest.fixture(scope="module")
def bystander(agent: EdgeProcess, report: Report) -> Iterator[None]:
    """For the fuzzing: the agent is warmed up first (valid frames of a dozen sizes, so its
    cache of compiled frame sizes is full) and then measured; another client sends a valid
    frame every 50 ms, alone for ALONE_S (bystander_alone_ms: what the loaded machine itself
    costs) and then through the fuzzing (bystander_ms: how long it waited behind the fuzzed
    inputs)."""
    frame = encoded(np.zeros((28, 28), np.uint8), "png")
    with PLAINTEXT.channel(agent.address) as channel:
        stub = pb_grpc.CascadeStub(channel)
        for size in range(20, 44, 2):
            image = np.zeros((size, size + 1), np.uint8)
            stub.Classify(pb.ClassifyRequest(encoded_image=encoded(image, "png")), timeout=30)
        report.figures["agent_before"] = agent_figures(agent)
        call = partial(stub.Classify, pb.ClassifyRequest(encoded_image=frame), timeout=10)
        alone: dict[str, list] = {"waited": [], "failed": [], "slow": []}
        alone_done = threading.Event()
        threading.Timer(ALONE_S, alone_done.set).start()
        waits(alone, alone_done, call)
        report.figures["bystander_alone_ms"] = summary(alone)
        fuzzing: dict[str, list] = {"waited": [], "failed": [], "slow": []}
        done = threading.Event()
        thread = threading.Thread(target=waits, args=(fuzzing, done, call))
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(15)
    report.figures["bystander_ms"] = summary(fuzzing)
