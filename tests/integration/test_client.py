"""edgecascade.client against a real edge agent (with Triton behind it): blocking and asyncio
calls of real test frames, an in-order stream that survives a bad frame, status, and the
CascadeError of a timeout and of a stopped agent."""

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from edgecascade.client import CascadeClient, CascadeError, ClassifyResult, Image, Tier, aio
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import Frame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    with EdgeProcess("fashion", triton.grpc_url, log) as agent:
        yield agent


@pytest.fixture(scope="module")
def client(edge: EdgeProcess) -> Iterator[CascadeClient]:
    with CascadeClient(edge.address) as client:
        yield client


@pytest.fixture(scope="module")
def answers(client: CascadeClient, frames: list[Frame]) -> list[ClassifyResult]:
    """The blocking client's answers to the first 50 frames, one call each."""
    return [
        client.classify(f.encoded, top_k=3, request_id=f"f{i}", client_timeout=10)
        for i, f in enumerate(frames[:50])
    ]


def test_blocking_classify_answers_real_frames(
    answers: list[ClassifyResult], frames: list[Frame], fashion_manifest: Manifest
) -> None:
    assert [a.request_id for a in answers] == [f"f{i}" for i in range(50)]
    for a in answers:
        assert a.error is None and not a.degraded and a.degraded_reason is None
        assert len(a.top_k) == 3 and [p.score for p in a.top_k] == sorted(
            (p.score for p in a.top_k), reverse=True
        )
        assert a.name == fashion_manifest.labels[a.class_id] and a.score == a.top_k[0].score
        assert a.versions.edge == fashion_manifest.edge.key
        assert a.versions.cloud == fashion_manifest.cloud.key
        if a.tier is Tier.CLOUD:
            assert a.timings.cloud_ms > 0 and a.timings.total_ms >= a.timings.cloud_ms
        else:
            assert a.tier is Tier.EDGE and a.class_id == a.edge_class_id and a.timings.cloud_ms == 0
    assert {a.tier for a in answers} == {Tier.EDGE, Tier.CLOUD}
    right = np.mean([a.class_id == f.label for a, f in zip(answers, frames)])
    assert right > 0.8


def test_pixels_get_the_answer_of_their_encoded_image(
    client: CascadeClient, answers: list[ClassifyResult], frames: list[Frame]
) -> None:
    image = cv2.imdecode(np.frombuffer(frames[1].encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    for pixels in (image, image[..., None], image[None, ..., None]):
        result = client.classify(pixels, top_k=3, client_timeout=10)
        assert result.class_id == answers[1].class_id
        assert result.edge_confidence == pytest.approx(answers[1].edge_confidence, abs=1e-6)


def test_asyncio_classify_gives_the_blocking_answers(
    edge: EdgeProcess, answers: list[ClassifyResult], frames: list[Frame]
) -> None:
    async def main() -> list[ClassifyResult]:
        async with aio.CascadeClient(edge.address) as client:
            calls = [client.classify(f.encoded, client_timeout=10) for f in frames[:50]]
            return list(await asyncio.gather(*calls))

    concurrent = asyncio.run(main())
    assert [r.class_id for r in concurrent] == [a.class_id for a in answers]
    assert [r.tier for r in concurrent] == [a.tier for a in answers]


def with_a_bad_frame(frames: list[Frame]) -> list[Image]:
    images: list[Image] = [f.encoded for f in frames[:50]]
    images[25] = b"\x89PNG but not really"
    return images


def aio_stream(address: str, images: list[Image]) -> list[ClassifyResult]:
    async def main() -> list[ClassifyResult]:
        async with aio.CascadeClient(address) as client:
            return [r async for r in client.classify_stream(images, window=4, client_timeout=60)]

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_a_stream_answers_in_order_and_a_bad_frame_fails_alone(
    kind: str,
    edge: EdgeProcess,
    client: CascadeClient,
    answers: list[ClassifyResult],
    frames: list[Frame],
) -> None:
    images = with_a_bad_frame(frames)
    if kind == "blocking":
        streamed = list(client.classify_stream(images, window=4, client_timeout=60))
    else:
        streamed = aio_stream(edge.address, images)
    assert len(streamed) == 50
    bad = streamed[25]
    assert bad.error is not None and bad.error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in bad.error.message
    with pytest.raises(CascadeError):
        _ = bad.class_id
    good = streamed[:25] + streamed[26:]
    assert all(r.error is None for r in good)
    assert [r.class_id for r in good] == [a.class_id for a in answers[:25] + answers[26:]]
    assert len({r.request_id for r in streamed}) == 50


def test_status_tells_versions_and_counts(
    client: CascadeClient, frames: list[Frame], fashion_manifest: Manifest, triton: TritonServer
) -> None:
    before = client.status(client_timeout=5)
    client.classify(frames[0].encoded, client_timeout=10)
    after = client.status(client_timeout=5)
    assert after.requests == before.requests + 1
    assert after.versions.edge == fashion_manifest.edge.key
    assert after.versions.family == "fashion" and after.cloud_url == triton.grpc_url
    assert after.cloud_ready and after.breaker == "closed" and "CPU" in after.device
    assert after.threshold == pytest.approx(fashion_manifest.policy.threshold)


@contextmanager
def paused(agent: EdgeProcess) -> Iterator[None]:
    """The agent stopped (SIGSTOP): connections stay open, nothing is answered."""
    assert agent.pid is not None
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(agent.pid, signal.SIGCONT)


@contextmanager
def past_half_a_second() -> Iterator[pytest.ExceptionInfo[CascadeError]]:
    """The CascadeError of a call with client_timeout=0.5, raised when that time is up."""
    started = time.perf_counter()
    with pytest.raises(CascadeError) as failed:
        yield failed
    assert 0.5 <= time.perf_counter() - started < 5


def test_a_call_past_its_client_timeout_is_deadline_exceeded(
    edge: EdgeProcess, client: CascadeClient, frames: list[Frame]
) -> None:
    async def asyncio_status() -> CascadeError:
        async with aio.CascadeClient(edge.address) as client:
            await client.status(client_timeout=5)  # connected
            with paused(edge), past_half_a_second() as failed:
                await client.status(client_timeout=0.5)
            return failed.value

    def slowly() -> Iterator[Image]:
        for f in frames:
            time.sleep(0.05)
            yield f.encoded

    with paused(edge), past_half_a_second() as unary:
        client.classify(frames[0].encoded, client_timeout=0.5)
    streamed = []
    with pytest.raises(CascadeError) as stream:
        for result in client.classify_stream(slowly(), client_timeout=1.0):
            streamed.append(result)
    for failed in (unary.value, asyncio.run(asyncio_status()), stream.value):
        assert failed.code is grpc.StatusCode.DEADLINE_EXCEEDED, failed
    assert 0 < len(streamed) < len(frames) and all(r.error is None for r in streamed)
    assert client.classify(frames[0].encoded, client_timeout=10).error is None  # serving again


def test_a_stopped_agent_is_unavailable(frames: list[Frame], tmp_path: Path) -> None:
    with EdgeProcess("fashion", None, tmp_path / "edge.log") as agent:
        with CascadeClient(agent.address) as client:
            assert client.classify(frames[0].encoded, client_timeout=10).tier is Tier.EDGE
            agent.stop()
            with pytest.raises(CascadeError) as failed:
                client.classify(frames[0].encoded, client_timeout=10)

            async def main() -> CascadeError:
                async with aio.CascadeClient(agent.address) as client:
                    with pytest.raises(CascadeError) as failed:
                        await client.status(client_timeout=10)
                    return failed.value

            for error in (failed.value, asyncio.run(main())):
                assert error.code is grpc.StatusCode.UNAVAILABLE, error
