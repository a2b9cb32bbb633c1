"""Latency budgets, the router gateway, failover and circuit breaking against real servers."""

import os
import queue
import signal
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from edgecascade.cloud.common.manifest import INPUT_NAME, OUTPUT_NAME, Manifest
from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from edgecascade.v1 import model_sync_pb2 as ms
from edgecascade.v1 import model_sync_pb2_grpc as ms_grpc
from tests.helpers import classify

pytestmark = pytest.mark.integration

ALWAYS_ESCALATE = ("--threshold", "1.0")


def cloud_inferences(triton: TritonServer, manifest: Manifest) -> int:
    """How many inferences Triton has run for the family's cloud model."""
    with PLAINTEXT.triton(triton.grpc_url) as client:
        stats = client.get_inference_statistics(manifest.cloud.name, str(manifest.cloud.version))
    return sum(m.inference_count for m in stats.model_stats)


def cascade_stub(channel: grpc.Channel) -> pb_grpc.CascadeStub:
    return pb_grpc.CascadeStub(channel)


def test_too_short_a_budget_is_answered_at_the_edge_without_calling_the_cloud(
    triton, fashion_manifest, frames, tmp_path
):
    with (
        EdgeProcess("fashion", triton.grpc_url, tmp_path / "edge.log", *ALWAYS_ESCALATE) as edge,
        PLAINTEXT.channel(edge.address) as channel,
    ):
        stub = cascade_stub(channel)
        assert classify(stub, frames[0], deadline_ms=5000).tier == pb.CLOUD
        before = cloud_inferences(triton, fashion_manifest)
        unary = [classify(stub, f, deadline_ms=1) for f in frames[:20]]
        streamed = list(
            stub.ClassifyStream(
                (pb.ClassifyRequest(encoded_image=f.encoded, deadline_ms=1) for f in frames[20:40]),
                timeout=30,
            )
        )
        assert cloud_inferences(triton, fashion_manifest) == before
        for r in unary + streamed:
            assert r.tier == pb.EDGE and r.degraded and r.degraded_reason == "deadline"
            assert r.top_k[0].class_id == r.edge_class_id and r.timings.cloud_ms < 1
        # With room in the budget (field or gRPC deadline) the cloud answers again.
        assert classify(stub, frames[41], deadline_ms=5000).tier == pb.CLOUD
        assert (
            stub.Classify(pb.ClassifyRequest(encoded_image=frames[42].encoded), timeout=5).tier
            == pb.CLOUD
        )
        assert cloud_inferences(triton, fashion_manifest) == before + 2
        status = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
        assert status.breaker == "closed" and status.degraded == 40
        assert 0 < status.cloud_latency_ewma_ms < 1000 and 0 < status.cloud_latency_p95_ms < 1000


def test_an_edge_gets_the_same_answers_through_the_gateway_as_straight_from_triton(
    triton, fashion_manifest, frames, tmp_path
):
    with (
        GatewayProcess(
            [triton.grpc_url], tmp_path / "gateway.log", registry=tmp_path / "reg"
        ) as gateway,
        EdgeProcess(
            "fashion", triton.grpc_url, tmp_path / "direct.log", *ALWAYS_ESCALATE
        ) as direct,
        EdgeProcess("fashion", gateway.url, tmp_path / "via.log", *ALWAYS_ESCALATE) as via,
        PLAINTEXT.channel(direct.address) as c1,
        PLAINTEXT.channel(via.address) as c2,
    ):
        for frame in frames[:30]:
            a, b = classify(cascade_stub(c1), frame), classify(cascade_stub(c2), frame)
            assert a.tier == b.tier == pb.CLOUD and not b.degraded
            assert [(p.class_id, round(p.score, 5)) for p in a.top_k] == [
                (p.class_id, round(p.score, 5)) for p in b.top_k
            ]
        assert cascade_stub(c2).GetStatus(pb.GetStatusRequest(), timeout=5).cloud_ready
        # Any KServe v2 client sees the gateway as it sees Triton.
        with (
            PLAINTEXT.triton(gateway.url) as g,
            PLAINTEXT.triton(triton.grpc_url) as t,
        ):
            name, version = fashion_manifest.cloud.name, str(fashion_manifest.cloud.version)
            assert g.is_server_live() and g.is_server_ready() and g.is_model_ready(name, version)
            assert g.get_model_metadata(name, version) == t.get_model_metadata(name, version)
            assert g.get_model_config(name, version) == t.get_model_config(name, version)
            assert g.get_server_metadata() == t.get_server_metadata()
            # Triton's streaming API goes through too.
            image = grpcclient.InferInput(INPUT_NAME, [1, 28, 28, 1], "UINT8")
            image.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.uint8))
            results: queue.Queue = queue.Queue()
            g.start_stream(callback=lambda result, error: results.put((result, error)))
            g.async_stream_infer(name, [image], model_version=version, request_id="s1")
            result, error = results.get(timeout=10)
            g.stop_stream()
            assert error is None and result.get_response().id == "s1"
            assert result.as_numpy(OUTPUT_NAME).shape == (1, len(fashion_manifest.labels))
            # A request larger than HAProxy's buffer (64 images of 784 B, plus 100 kB of
            # request parameters) is streamed through.
            batch = grpcclient.InferInput(INPUT_NAME, [64, 28, 28, 1], "UINT8")
            pixels = np.stack([np.full((28, 28, 1), i * 4, np.uint8) for i in range(64)])
            batch.set_data_from_numpy(pixels)
            padding = {"padding": "x" * 100_000}
            big = [
                client.infer(name, [batch], model_version=version, parameters=padding)
                for client in (g, t)
            ]
            big = [result.as_numpy(OUTPUT_NAME) for result in big]
            assert big[0].shape == (64, len(fashion_manifest.labels))
            np.testing.assert_allclose(big[0], big[1], rtol=1e-5, atol=1e-5)
            with pytest.raises(grpcclient.InferenceServerException) as err:
                g.get_model_metadata("no_such_model")
            assert err.value.status() == "StatusCode.NOT_FOUND"  # Triton's own error, passed on
            assert g.is_server_live()
        # Edges can sync their models from the same address (an empty registry here).
        with PLAINTEXT.channel(gateway.url) as channel:
            with pytest.raises(grpc.RpcError) as err:
                ms_grpc.ModelSyncStub(channel).GetManifest(
                    ms.GetManifestRequest(family="fashion"), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND


def kill(triton: TritonServer) -> None:
    """SIGKILL the server and its python-backend stubs, as a crashed machine would go."""
    os.killpg(triton.pid, signal.SIGKILL)
    triton.stop()


def test_failover_then_breaker_opens_when_all_are_gone_and_closes_when_one_is_back(
    fashion_repository, fashion_manifest, frames, tmp_path
):
    a = TritonServer(fashion_repository, log_path=tmp_path / "a.log").start()
    b = TritonServer(fashion_repository, log_path=tmp_path / "b.log").start()
    gateway = GatewayProcess(
        [a.grpc_url, b.grpc_url], tmp_path / "gateway.log", probe_interval_s=0.2
    )
    edge = EdgeProcess(
        "fashion",
        gateway.url,
        tmp_path / "edge.log",
        *ALWAYS_ESCALATE,
        "--breaker-failures",
        "3",
        "--breaker-cooldown",
        "1.0",
    )
    try:
        gateway.start()
        edge.start()
        with PLAINTEXT.channel(edge.address) as channel:
            stub = cascade_stub(channel)
            served_by_a: list[int] = []
            responses: list[pb.ClassifyResponse] = []

            def camera(n: int, kill_at: int, in_flight: int = 8) -> Iterator[pb.ClassifyRequest]:
                """Frames with at most `in_flight` unanswered; kills `a` with frames in flight."""
                for i, frame in enumerate(frames[:n]):
                    while len(responses) < i - in_flight:
                        time.sleep(0.001)
                    if i == kill_at - in_flight:
                        served_by_a.append(cloud_inferences(a, fashion_manifest))
                    if i == kill_at:
                        kill(a)
                    yield pb.ClassifyRequest(request_id=str(i), encoded_image=frame.encoded)

            # 1. One of two Triton servers dies mid-stream: no frame is lost or degraded.
            responses.extend(stub.ClassifyStream(camera(160, kill_at=70), timeout=120))
            assert [r.request_id for r in responses] == [str(i) for i in range(160)]
            assert all(r.tier == pb.CLOUD and not r.degraded for r in responses), [
                r.degraded_reason for r in responses if r.degraded
            ]
            assert served_by_a[0] > 0  # both servers were in use before the kill
            assert cloud_inferences(b, fashion_manifest) > 0

            # 2. All gone: degraded answers, the breaker opens and the cloud is left alone.
            kill(b)
            started = time.perf_counter()
            gone = [classify(stub, f) for f in frames[:10]]
            assert all(r.tier == pb.EDGE and r.degraded_reason == "cloud-unavailable" for r in gone)
            status = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert status.breaker == "open", status
            elapsed = time.perf_counter() - started
            print(f"\n10 degraded answers with both servers gone in {elapsed:.3f}s")

            # 3. One comes back on the same port: the breaker probes, closes, escalation resumes.
            a = TritonServer(
                fashion_repository, grpc_port=a.grpc_port, log_path=tmp_path / "a2.log"
            )
            a.start()
            back_at = time.perf_counter()
            while classify(stub, frames[0]).tier != pb.CLOUD:
                assert time.perf_counter() - back_at < 15, "escalation did not resume"
                time.sleep(0.05)
            print(f"escalation resumed {time.perf_counter() - back_at:.3f}s after Triton was back")
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=5).breaker == "closed"
            assert all(classify(stub, f).tier == pb.CLOUD for f in frames[:10])
    finally:
        edge.stop()
        gateway.stop()
        a.stop()
        b.stop()


def test_escalations_larger_than_the_gateways_buffer_survive_a_triton_kill(
    imagenet_manifest, tmp_path
):
    """ImageNet escalations are 203 kB (260x260x3), more than the 64 KiB HAProxy buffers and so
    can resend itself. One of two Tritons is SIGKILLed with 4 of them in flight: the edge's
    cloud client retries what the dead server dropped, through the gateway to the other one,
    and every frame is still answered by the cloud."""
    repository = tmp_path / "repository"
    write_model(imagenet_manifest, family_dir("imagenet"), repository)
    photos = labelled_frames("imagenet")
    a = TritonServer(repository, log_path=tmp_path / "a.log").start()
    b = TritonServer(repository, log_path=tmp_path / "b.log").start()
    gateway = GatewayProcess([a.grpc_url, b.grpc_url], tmp_path / "gateway.log")
    edge = EdgeProcess(
        "imagenet", gateway.url, tmp_path / "edge.log", *ALWAYS_ESCALATE, "--cloud-timeout", "20"
    )
    try:
        gateway.start()
        edge.start()
        with PLAINTEXT.channel(edge.address) as channel:
            responses: list[pb.ClassifyResponse] = []
            served_by_a: list[int] = []

            def camera(n: int, kill_at: int, in_flight: int = 4) -> Iterator[pb.ClassifyRequest]:
                for i in range(n):
                    while len(responses) < i - in_flight:
                        time.sleep(0.001)
                    if i == kill_at:
                        served_by_a.append(cloud_inferences(a, imagenet_manifest))
                        kill(a)
                    photo = photos[i % len(photos)]
                    yield pb.ClassifyRequest(request_id=str(i), encoded_image=photo.encoded)

            stub = cascade_stub(channel)
            responses.extend(stub.ClassifyStream(camera(40, kill_at=16), timeout=300))
            assert [r.request_id for r in responses] == [str(i) for i in range(40)]
            assert all(r.tier == pb.CLOUD and not r.degraded for r in responses), [
                r.degraded_reason for r in responses if r.degraded
            ]
            assert served_by_a[0] > 0 and cloud_inferences(b, imagenet_manifest) > 0
            status = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert status.bytes_to_cloud / status.escalations > 64 * 1024
    finally:
        edge.stop()
        gateway.stop()
        a.stop()
        b.stop()
