"""The reliability suite runs against real edge agents in front of the integration tests'
Triton; what it tried and got back goes into one report for the session."""

import multiprocessing
from collections.abc import Iterator

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
from tests.reliability.bystander import run as bystander_run
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


@pytest.fixture(scope="module")
def bystander(agent: EdgeProcess, report: Report) -> Iterator[None]:
    """For the fuzzing: the agent is warmed up first (valid frames of a dozen sizes, so its
    cache of compiled frame sizes is full) and then measured; another client, a process of its
    own (tests/reliability/bystander.py), sends a valid frame every 50 ms, alone for ALONE_S
    (bystander_alone_ms: what the loaded machine itself costs) and then through the fuzzing
    (bystander_ms: how long it waited behind the fuzzed inputs)."""
    with PLAINTEXT.channel(agent.address) as channel:
        stub = pb_grpc.CascadeStub(channel)
        for size in range(20, 44, 2):
            image = np.zeros((size, size + 1), np.uint8)
            stub.Classify(pb.ClassifyRequest(encoded_image=encoded(image, "png")), timeout=30)
    report.figures["agent_before"] = agent_figures(agent)
    spawn = multiprocessing.get_context("spawn")
    stop, results = spawn.Event(), spawn.Queue()
    client = spawn.Process(target=bystander_run, args=(agent.address, ALONE_S, stop, results))
    client.start()
    try:
        phase, report.figures["bystander_alone_ms"] = results.get(timeout=ALONE_S + 60)
        assert phase == "alone"
        yield
    finally:
        stop.set()
        phase, waits = results.get(timeout=60)
        for slow in waits["slow_calls"]:  # the fuzzed inputs it waited behind, by class
            slow["fuzzing"] = report.in_flight(slow["at"], slow["at"] + slow["ms"] / 1e3)
        report.figures["bystander_ms"] = waits
        client.join(15)
