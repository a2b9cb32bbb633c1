"""Uploads of collected examples over real gRPC on loopback: ModelSync's UploadExamples on a
real grpc.aio server (the gateway's servicer) and, end to end, a real agent escalating to a real
Triton and uploading to a real gateway.

- A connection broken mid-upload (a proxy cut) is resumed from the acknowledged cursor: every
  example is kept on the cloud side exactly once.
- The quota per edge is RESOURCE_EXHAUSTED with a message that says what to do; malformed
  examples are INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from edgecascade.cloud.common.example_messages import to_message
from edgecascade.cloud.common.examples import Example, ExampleStore
from edgecascade.cloud.common.launcher import wait_until
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.examples import open_received, received_path
from edgecascade.cloud.registry.model_sync import add_model_sync
from edgecascade.cloud.registry.store import Registry
from edgecascade.edge.serving.collection import store_path
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.router.sync.uploader import ExampleUploader
from edgecascade.v1 import cascade_pb2 as cascade_pb
from edgecascade.v1 import cascade_pb2_grpc as cascade_grpc
from edgecascade.v1 import model_sync_pb2 as pb
from edgecascade.v1 import model_sync_pb2_grpc as pb_grpc
from tests.family_files import copy_family
from tests.helpers import classify, following_edge, metric

pytestmark = pytest.mark.integration
SHAPE = (64, 64, 3)
FASHION_EXAMPLE_BYTES = 28 * 28 + 2 * 10 * 4  # a fashion example in a store


def example(i: int) -> Example:
    image = np.random.default_rng(i).integers(0, 256, SHAPE, np.uint8)
    probabilities = np.full(10, 0.1, np.float32)
    return Example.of("fashion", "fashion_edge:1", "escalated", image, probabilities, probabilities)


def edge_store(folder: Path, n: int) -> ExampleStore:
    store = ExampleStore(folder / "edge.sqlite", 1 << 30)
    for i in range(n):
        store.add(example(i))
    return store


@contextlib.asynccontextmanager
async def model_sync(registry: Path, quota_bytes: int = 1 << 30) -> AsyncIterator[int]:
    server = PLAINTEXT.server()
    add_model_sync(server, Registry(registry), examples_quota_bytes=quota_bytes)
    port = PLAINTEXT.listen(server, "127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=None)


class SlowProxy:
    """Forwards TCP to `port`, 16 KiB at a time with a pause; `cut()` breaks every connection."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(16384):
                    sink.write(data)
                    await sink.drain()
                    await asyncio.sleep(0.002)
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


def test_an_upload_broken_midway_resumes_without_duplicates(tmp_path: Path) -> None:
    n = 300
    store = edge_store(tmp_path, n)
    uploader = ExampleUploader(store, "cam-1", batch=n)  # one call, so the cut lands inside it
    received = received_path(tmp_path / "registry", "fashion", "cam-1")

    async def main() -> tuple[int, pb.UploadExamplesResponse | None]:
        async with model_sync(tmp_path / "registry") as port:
            proxy = SlowProxy(port)
            proxy_port = await proxy.start()
            async with PLAINTEXT.aio_channel(f"127.0.0.1:{proxy_port}") as channel:
                upload = asyncio.create_task(uploader.upload(pb_grpc.ModelSyncStub(channel)))
                while not received.exists() or len(open_received(received)) < 50:
                    await asyncio.sleep(0.01)
                proxy.cut()
                with pytest.raises(grpc.aio.AioRpcError) as broken:
                    await upload
                assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
            kept_before = len(open_received(received))
            assert uploader.cursor == 0  # nothing acknowledged: all is sent again
            async with PLAINTEXT.aio_channel(f"127.0.0.1:{port}") as channel:
                sent = await uploader.upload(pb_grpc.ModelSyncStub(channel))
            return kept_before, sent

    kept_before, sent = asyncio.run(main())
    assert 50 <= kept_before < n and sent == n
    # the server may still keep examples it had read before the cut after `kept_before` is
    # counted, so the resend finds at least those as duplicates, and every example counts once
    assert uploader.uploaded + uploader.duplicates == n and uploader.duplicates >= kept_before
    cloud = open_received(received)
    shas = [e.sha256 for e in cloud.examples()]
    assert len(shas) == len(set(shas)) == n and set(shas) == {e.sha256 for e in store.examples()}
    assert uploader.cursor == store.after(0, n)[-1][0]


def test_the_quota_per_edge_is_resource_exhausted_with_what_to_do(tmp_path: Path) -> None:
    one = example(0).nbytes
    store = edge_store(tmp_path, 10)

    cam2 = ExampleUploader(store, "cam-2", batch=2)

    async def main() -> grpc.aio.AioRpcError:
        async with (
            model_sync(tmp_path / "registry", quota_bytes=4 * one) as port,
            PLAINTEXT.aio_channel(f"127.0.0.1:{port}") as channel,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ExampleUploader(store, "cam-1").upload(pb_grpc.ModelSyncStub(channel))
            # another edge has a quota of its own: two batches of 2 fit, the third does not
            with pytest.raises(grpc.aio.AioRpcError):
                await cam2.upload(pb_grpc.ModelSyncStub(channel))
            return refused.value

    refused = asyncio.run(main())
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "edge 'cam-1'" in refused.details() and "quota" in refused.details()
    assert "--examples-quota-bytes" in refused.details()
    assert len(open_received(received_path(tmp_path / "registry", "fashion", "cam-1"))) == 4
    assert len(open_received(received_path(tmp_path / "registry", "fashion", "cam-2"))) == 4
    assert cam2.cursor == store.after(0, 4)[-1][0] and cam2.uploaded == 4


def test_gateways_sharing_a_registry_share_the_quota_and_acknowledge_a_resend(
    tmp_path: Path,
) -> None:
    one, registry = example(0).nbytes, tmp_path / "registry"

    async def upload(channel: grpc.aio.Channel, seeds: range) -> pb.UploadExamplesResponse:
        messages = [to_message("cam-1", example(i)) for i in seeds]
        response: pb.UploadExamplesResponse = await pb_grpc.ModelSyncStub(channel).UploadExamples(
            iter(messages), timeout=10
        )
        return response

    async def main() -> tuple[list[pb.UploadExamplesResponse], grpc.aio.AioRpcError]:
        async with (
            model_sync(registry, quota_bytes=4 * one) as first,
            model_sync(registry, quota_bytes=4 * one) as second,
            PLAINTEXT.aio_channel(f"127.0.0.1:{first}") as a,
            PLAINTEXT.aio_channel(f"127.0.0.1:{second}") as b,
        ):
            answers = [await upload(a, range(2)), await upload(b, range(2, 4))]
            answers.append(await upload(b, range(4)))  # the quota is full: a resend of kept ones
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await upload(a, range(3, 5))
            return answers, refused.value

    answers, refused = asyncio.run(main())
    assert [(r.kept, r.duplicates) for r in answers] == [(2, 0), (2, 0), (0, 4)]
    assert [r.edge_bytes for r in answers] == [2 * one, 4 * one, 4 * one]  # both gateways count
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"has {4 * one} bytes" in refused.details()
    assert len(open_received(received_path(registry, "fashion", "cam-1"))) == 4


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"image_shape": [64, 64, 4]}, "image_shape"),
        ({"sha256": "0" * 64}, "sha256"),
        ({"kind": "guess"}, "kind"),
        ({"edge_id": "../etc"}, "edge id"),
        ({"family": "a/b"}, "family"),
        ({"cloud_probabilities": [0.5, 0.5]}, "probabilities"),
    ],
)
def test_a_malformed_example_is_invalid_argument_naming_the_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    message = to_message("cam-1", example(0))
    for key, value in change.items():
        if isinstance(value, list):
            del getattr(message, key)[:]
            getattr(message, key).extend(value)
        else:
            setattr(message, key, value)

    async def main() -> grpc.aio.AioRpcError:
        async with (
            model_sync(tmp_path / "registry") as port,
            PLAINTEXT.aio_channel(f"127.0.0.1:{port}") as channel,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.ModelSyncStub(channel).UploadExamples(iter([message]), timeout=10)
            return refused.value

    refused = asyncio.run(main())
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("example 1: ") and field in refused.details()


def test_a_real_agent_uploads_what_it_collected_to_a_real_gateway(
    triton, frames, fashion_manifest, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    registry.publish("fashion", copy_family(tmp_path / "build"))
    artifacts = tmp_path / "edge-artifacts"
    with (
        GatewayProcess([triton.grpc_url], tmp_path / "gateway.log", registry=registry.root) as gw,
        following_edge(
            triton.grpc_url,
            gw.url,
            artifacts,
            tmp_path / "edge.log",
            *("--edge-id", "cam-7", "--upload-interval", "0.3"),
        ) as edge,
        PLAINTEXT.channel(edge.address) as channel,
    ):
        stub = cascade_grpc.CascadeStub(channel)
        escalated = sum(classify(stub, f).tier == 2 for f in frames[:200])
        assert escalated > 0
        received = received_path(registry.root, "fashion", "cam-7")
        local = store_path(artifacts, "fashion")
        assert wait_until(lambda: local.exists() and len(ExampleStore(local, 1 << 30)) > 0, 10)
        assert wait_until(
            lambda: (
                received.exists()
                and {e.sha256 for e in open_received(received).examples()}
                == {e.sha256 for e in ExampleStore(local, 1 << 30).examples()}
            ),
            20,
        ), edge.log_tail()
        n = len(ExampleStore(local, 1 << 30))
        assert wait_until(lambda: upload_status(edge.address)[0] == n, 10)
        assert upload_status(edge.address) == (n, 0, 0, "")
    kept = list(open_received(received).examples())
    assert all(e.kind == "escalated" and e.edge_version == fashion_manifest.edge.key for e in kept)
    assert all(e.image.shape == fashion_manifest.edge.preprocessing.shape for e in kept)


def test_a_real_agent_reports_refused_uploads_in_status_and_metrics(
    triton, frames, tmp_path: Path
) -> None:
    """A real gateway with a quota of 3 examples: the agent's uploads stop there (the kept ones
    are acknowledged as duplicates when sent again) and it says so in GetStatus and metrics."""
    registry = Registry(tmp_path / "registry")
    registry.publish("fashion", copy_family(tmp_path / "build"))
    quota = ("--examples-quota-bytes", str(3 * FASHION_EXAMPLE_BYTES))
    metrics_port = free_port()
    with (
        GatewayProcess(
            [triton.grpc_url], tmp_path / "gateway.log", registry=registry.root, options=quota
        ) as gw,
        following_edge(
            triton.grpc_url,
            gw.url,
            tmp_path / "edge-artifacts",
            tmp_path / "edge.log",
            *("--edge-id", "cam-8", "--upload-interval", "0.2"),
            *("--metrics-port", str(metrics_port)),
        ) as edge,
        PLAINTEXT.channel(edge.address) as channel,
    ):
        stub = cascade_grpc.CascadeStub(channel)
        assert sum(classify(stub, f).tier == 2 for f in frames[:200]) > 3
        assert wait_until(lambda: upload_status(edge.address)[2] >= 2, 20), edge.log_tail()
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        failures = metric(url, "edgecascade_example_upload_failures_total")
        uploaded, already, failed, error = upload_status(edge.address)
        assert failures is not None and 2 <= failures <= failed
        assert error.startswith("RESOURCE_EXHAUSTED: edge 'cam-8'") and "quota" in error
        assert uploaded <= 3 and already == 0  # only calls within the quota went through
        assert metric(url, "edgecascade_examples_uploaded_total", outcome="kept") == uploaded
    received = received_path(registry.root, "fashion", "cam-8")
    assert len(open_received(received)) == 3


def upload_status(address: str) -> tuple[int, int, int, str]:
    """GetStatus' upload fields: kept, already kept, failures, the last error."""
    with PLAINTEXT.channel(address) as channel:
        status = cascade_grpc.CascadeStub(channel).GetStatus(
            cascade_pb.GetStatusRequest(), timeout=5
        )
    return (
        status.examples_uploaded,
        status.examples_already_kept,
        status.upload_failures,
        status.upload_error,
    )
