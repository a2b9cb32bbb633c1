"""Dynamic batching in a real agent over real gRPC, escalating to a real Triton: calls that
arrive together share one execution, each keeps its own answer and errors, streams stay in
order, the queue delay is kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.samples import Frame
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import Agent, start_agent

pytestmark = pytest.mark.integration
DELAY_MS = 30
CALLS = 16


@pytest.fixture(scope="module")
def agent(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    agent = start_agent(
        tmp_path_factory.mktemp("edge"),
        triton.grpc_url,
        "--dynamic-batching",
        "--max-queue-delay-us",
        str(DELAY_MS * 1000),
    )
    yield agent
    agent.process.stop()


def counted(agent: Agent, kind: str) -> float:
    """nv_inference_exec_count ("exec") or nv_inference_count ("") of the served version."""
    name = f"nv_inference_{kind + '_' if kind else ''}count"
    return agent.metric(name, model="fashion", version=agent_version(agent))


def agent_version(agent: Agent) -> str:
    with PLAINTEXT.channel(agent.address) as channel:
        status = pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
    return str(status.manifest_version)


def request(frame: Frame, i: int) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(request_id=str(i), encoded_image=frame.encoded, top_k=3)


def answer(response: pb.ClassifyResponse) -> tuple[object, ...]:
    top = [(p.class_id, round(p.score, 4)) for p in response.top_k]
    return response.request_id, pb.Tier.Name(response.tier), response.edge_class_id, *top


def concurrently(stub: pb_grpc.CascadeStub, requests: list[pb.ClassifyRequest]) -> list[Any]:
    """All calls started together (a barrier), each a Classify; its response or its error."""
    barrier = threading.Barrier(len(requests))

    def call(r: pb.ClassifyRequest) -> Any:
        barrier.wait()
        try:
            return stub.Classify(r, timeout=30)
        except grpc.RpcError as e:
            return e

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def test_concurrent_calls_share_executions_and_answer_as_alone(
    agent: Agent, channel: grpc.Channel, frames: list[Frame]
) -> None:
    stub = pb_grpc.CascadeStub(channel)
    alone_by_frame = {i: stub.Classify(request(frames[i], i), timeout=30) for i in range(80)}
    cloud = [i for i, r in alone_by_frame.items() if r.tier == pb.CLOUD][: CALLS // 4]
    chosen = cloud + [i for i in alone_by_frame if i not in cloud][: CALLS - len(cloud)]
    assert cloud, "no frame among the first 80 escalated"
    requests = [request(frames[i], i) for i in chosen]
    alone = [answer(alone_by_frame[i]) for i in chosen]  # each one at a time
    executions = counted(agent, "exec")
    inferences = counted(agent, "")
    together = concurrently(stub, requests)
    assert [answer(r) for r in together] == alone
    assert any(r.tier == pb.CLOUD for r in together)
    executed = counted(agent, "exec") - executions
    inferred = counted(agent, "") - inferences
    assert inferred == CALLS
    assert executed < CALLS / 2
    status = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert max(b.size for b in status.batches) > 1
    assert sum(b.size * b.executions for b in status.batches) == status.requests


def test_a_bad_image_among_batched_calls_gets_its_error_and_the_others_answers(
    channel: grpc.Channel, frames: list[Frame]
) -> None:
    stub = pb_grpc.CascadeStub(channel)
    requests = [request(frames[i], i) for i in range(8)]
    requests[3] = pb.ClassifyRequest(request_id="3", encoded_image=b"not an image")
    outcomes = concurrently(stub, requests)
    bad = outcomes.pop(3)
    assert isinstance(bad, grpc.RpcError)
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [r.request_id for r in outcomes] == ["0", "1", "2", "4", "5", "6", "7"]
    assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).requests > 0  # still serving


def test_a_lone_call_waits_the_queue_delay_and_it_counts_as_queue_time(
    agent: Agent, channel: grpc.Channel, frames: list[Frame]
) -> None:
    stub = pb_grpc.CascadeStub(channel)
    labels = {"model": "fashion", "version": agent_version(agent)}
    queued_us = agent.metric("nv_inference_queue_duration_us", **labels)
    status_us = stub.GetStatus(pb.GetStatusRequest(), timeout=10).queue_duration_us
    response = stub.Classify(request(frames[0], 0), timeout=30)
    assert response.timings.total_ms >= DELAY_MS
    assert agent.metric("nv_inference_queue_duration_us", **labels) - queued_us >= DELAY_MS * 1e3
    status = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert status.queue_duration_us - status_us >= DELAY_MS * 1000


def test_stream_frames_in_flight_are_batched_and_answered_in_order(
    agent: Agent, channel: grpc.Channel, frames: list[Frame]
) -> None:
    stub = pb_grpc.CascadeStub(channel)
    executions = counted(agent, "exec")
    responses = list(
        stub.ClassifyStream(iter([request(f, i) for i, f in enumerate(frames[:40])]), timeout=60)
    )
    assert [r.request_id for r in responses] == [str(i) for i in range(40)]
    alone = {answer(stub.Classify(request(frames[i], i), timeout=30)) for i in (0, 17, 39)}
    assert alone <= {answer(r) for r in responses}
    executed = counted(agent, "exec") - executions
    assert executed < 40 / 2 + 3  # frames of the window went together (+3: the calls alone)


def test_concurrent_kserve_requests_share_executions(
    agent: Agent, channel: grpc.Channel, frames: list[Frame]
) -> None:
    client = PLAINTEXT.triton(agent.address)
    executions = counted(agent, "exec")
    barrier = threading.Barrier(CALLS)

    def infer(i: int) -> np.ndarray:
        tensor = tc.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([frames[i].encoded], dtype=np.object_))
        barrier.wait()
        return client.infer("fashion", [tensor]).as_numpy("probabilities")

    try:
        with ThreadPoolExecutor(CALLS) as pool:
            results = list(pool.map(infer, range(CALLS)))
    finally:
        client.close()
    assert all(r.shape[-1] == 10 for r in results)
    executed = counted(agent, "exec") - executions
    assert executed < CALLS / 2
