"""ModelSync on a real grpc.aio server on loopback, over a registry holding the fashion family."""

import asyncio
import hashlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.model_sync import CHUNK_BYTES, add_model_sync
from edgecascade.cloud.registry.store import Registry
from edgecascade.router.sync.client import (
    ArtifactError,
    fetch_artifact,
    fetch_manifest_files,
    get_manifest,
    watch_manifests,
)
from edgecascade.v1 import model_sync_pb2 as pb
from edgecascade.v1 import model_sync_pb2_grpc as pb_grpc
from tests.family_files import copy_family

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def recalibrate(folder: Path, threshold: float) -> None:
    manifest = Manifest.load(folder / "manifest.json")
    manifest.policy.threshold = threshold
    manifest.save(folder / "manifest.json")


@pytest.fixture
def registry(fashion_manifest: Manifest, tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    registry.publish("fashion", copy_family(tmp_path / "build"))
    return registry


@asynccontextmanager
async def model_sync(registry: Registry) -> AsyncIterator[pb_grpc.ModelSyncStub]:
    server = PLAINTEXT.server()
    add_model_sync(server, registry, poll_interval_s=0.05)
    port = PLAINTEXT.listen(server, "127.0.0.1:0")
    await server.start()
    try:
        async with PLAINTEXT.aio_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.ModelSyncStub(channel)
    finally:
        await server.stop(grace=None)


def run(test: Callable[[pb_grpc.ModelSyncStub], Awaitable[None]], registry: Registry) -> None:
    async def main() -> None:
        async with model_sync(registry) as stub:
            await test(stub)

    asyncio.run(main())


async def status_of(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status code and message a call fails with (of a stream: its first read)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


def test_get_manifest_current_and_by_version(registry: Registry, tmp_path: Path) -> None:
    recalibrate(tmp_path / "build", 0.5)
    registry.publish("fashion", tmp_path / "build")

    async def test(stub: pb_grpc.ModelSyncStub) -> None:
        current = await stub.GetManifest(pb.GetManifestRequest(family="fashion"))
        stored = registry.manifest_file("fashion", 2).read_text()
        assert (current.version, current.current, current.manifest_json) == (2, True, stored)
        assert current.manifest_sha256 == hashlib.sha256(stored.encode()).hexdigest()
        first = await get_manifest(stub, "fashion", 1)
        assert first == registry.get("fashion", 1) and first.policy.threshold != 0.5
        old = await stub.GetManifest(pb.GetManifestRequest(family="fashion", version=1))
        assert not old.current

        code, message = await status_of(stub.GetManifest(pb.GetManifestRequest(family="shoes")))
        assert code == grpc.StatusCode.NOT_FOUND and "'shoes'" in message
        request = pb.GetManifestRequest(family="fashion", version=9)
        code, message = await status_of(stub.GetManifest(request))
        assert code == grpc.StatusCode.NOT_FOUND and "published: [1, 2]" in message
        code, _ = await status_of(stub.GetManifest(pb.GetManifestRequest(family="../x")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT

    run(test, registry)


def test_watch_hears_a_publish_made_by_another_process(registry: Registry, tmp_path: Path) -> None:
    recalibrate(tmp_path / "build", 0.42)
    publish = edgecascade_command("models", "publish", "--family", "fashion")
    publish += ["--registry", str(registry.root), "--source", str(tmp_path / "build")]

    async def test(stub: pb_grpc.ModelSyncStub) -> None:
        watch = watch_manifests(stub, "fashion")
        first = await asyncio.wait_for(anext(watch), 5)
        assert first.version == 1

        quiet = stub.WatchManifests(pb.WatchManifestsRequest(family="fashion", after_version=1))
        process = await asyncio.create_subprocess_exec(*publish, cwd=REPO_ROOT)
        assert await process.wait() == 0
        published = time.monotonic()
        second = await asyncio.wait_for(anext(watch), 5)
        heard_after = time.monotonic() - published
        assert (second.version, second.policy.threshold) == (2, 0.42)
        assert (second.edge.key, second.cloud.key) == (first.edge.key, first.cloud.key)
        assert heard_after < 1.0
        # A watcher already on v1 was sent nothing until v2.
        assert (await asyncio.wait_for(quiet.read(), 5)).version == 2
        quiet.cancel()

        registry.activate("fashion", 1)  # a rollback is a change too
        assert (await asyncio.wait_for(anext(watch), 5)).version == 1
        await watch.aclose()

        request = pb.WatchManifestsRequest(family="shoes")
        code, message = await status_of(stub.WatchManifests(request).read())
        assert code == grpc.StatusCode.NOT_FOUND and "known: ['fashion']" in message

    run(test, registry)
    listing = subprocess.run(
        edgecascade_command("models", "list", "--registry", str(registry.root)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in listing.splitlines() if "fashion_cloud:1" in line]
    (v1, v2) = rows  # v1 is current again after the rollback
    assert (v1[1], v1[-1]) == ("1", "*")
    assert (v2[1], v2[4]) == ("2", "0.4200") and v2[-1] != "*"


def test_fetch_resumes_from_an_offset_and_checks_the_sha256(
    registry: Registry, tmp_path: Path
) -> None:
    manifest = registry.get("fashion")
    sha = manifest.cloud.files["cloud/model.onnx"]
    content = registry.blob_path(sha).read_bytes()
    assert len(content) > 2 * CHUNK_BYTES  # several chunks
    offset = CHUNK_BYTES + 12345

    async def test(stub: pb_grpc.ModelSyncStub) -> None:
        chunks = [
            c async for c in stub.FetchArtifact(pb.FetchArtifactRequest(sha256=sha, offset=offset))
        ]
        assert chunks[0].offset == offset and {c.total_size for c in chunks} == {len(content)}
        assert b"".join(c.data for c in chunks) == content[offset:]
        assert max(len(c.data) for c in chunks) == CHUNK_BYTES

        dest = tmp_path / "edge" / "model.onnx"
        dest.parent.mkdir()
        (dest.parent / "model.onnx.partial").write_bytes(content[:offset])  # a broken download
        assert await fetch_artifact(stub, sha, dest) == dest
        assert dest.read_bytes() == content and not (dest.parent / "model.onnx.partial").exists()

        (dest.parent / "bad.onnx.partial").write_bytes(b"not a prefix of the artifact")
        with pytest.raises(ArtifactError, match="hashes to"):
            await fetch_artifact(stub, sha, dest.parent / "bad.onnx")
        assert not (dest.parent / "bad.onnx").exists()
        assert not (dest.parent / "bad.onnx.partial").exists()  # the next try starts over

        folder = await fetch_manifest_files(stub, manifest, tmp_path / "pair")
        Manifest.load(folder / "manifest.json").verify(folder)

    run(test, registry)


def test_fetch_errors_have_the_right_codes_and_the_server_keeps_serving(
    registry: Registry,
) -> None:
    manifest = registry.get("fashion")
    sha = manifest.cloud.files["cloud/model.onnx"]
    size = registry.blob_path(sha).stat().st_size
    edge_sha = manifest.edge.files["edge/model.bin"]

    async def fetch(stub: pb_grpc.ModelSyncStub, sha256: str, offset: int = 0) -> tuple:
        request = pb.FetchArtifactRequest(sha256=sha256, offset=offset)
        return await status_of(stub.FetchArtifact(request).read())

    async def test(stub: pb_grpc.ModelSyncStub) -> None:
        code, message = await fetch(stub, sha, size + 1)
        assert code == grpc.StatusCode.OUT_OF_RANGE and f"({size} bytes)" in message
        code, message = await fetch(stub, "ab" * 32)
        assert code == grpc.StatusCode.NOT_FOUND and "no artifact with sha256" in message
        code, message = await fetch(stub, "../../manifest.json")
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "64 lowercase hex" in message
        last = await stub.FetchArtifact(pb.FetchArtifactRequest(sha256=sha, offset=size)).read()
        assert (last.offset, last.data, last.total_size) == (size, b"", size)

        blob = registry.blob_path(sha)
        blob.chmod(0o644)
        corrupted = bytearray(blob.read_bytes())
        corrupted[size // 2] ^= 1  # one flipped bit
        blob.write_bytes(corrupted)
        code, message = await fetch(stub, sha)
        assert code == grpc.StatusCode.DATA_LOSS and f"artifact {sha} is corrupted" in message
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fetch_artifact(stub, sha, registry.root.parent / "never.onnx")
        assert info.value.code() == grpc.StatusCode.DATA_LOSS  # not retried
        assert not (registry.root.parent / "never.onnx").exists()

        # Still serving: the other artifacts and the manifests.
        assert (await stub.GetManifest(pb.GetManifestRequest(family="fashion"))).version == 1
        chunks = stub.FetchArtifact(pb.FetchArtifactRequest(sha256=edge_sha))
        assert hashlib.sha256(b"".join([c.data async for c in chunks])).hexdigest() == edge_sha

    run(test, registry)


BAD_NAMES = {
    "5,000-character family": "f" * 5000,
    "a path": "../../etc",
    "an absolute path": "/etc/passwd",
    "a NUL byte": "fashion\x00",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES)
def test_a_bad_name_is_invalid_argument_on_every_method_and_leaks_nothing(
    registry: Registry, name: str
) -> None:
    async def test(stub: pb_grpc.ModelSyncStub) -> None:
        calls = {
            "GetManifest": stub.GetManifest(pb.GetManifestRequest(family=name)),
            "WatchManifests": stub.WatchManifests(pb.WatchManifestsRequest(family=name)).read(),
            "FetchArtifact": stub.FetchArtifact(pb.FetchArtifactRequest(sha256=name)).read(),
        }
        for method, call in calls.items():
            code, message = await status_of(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, message)
            assert str(registry.root) not in message, (method, message)
            assert len(message) < 300, (method, len(message))
        served = await stub.GetManifest(pb.GetManifestRequest(family="fashion"))
        assert served.version == 1

    run(test, registry)


def test_a_100_kb_artifact_name_is_refused_with_a_short_message(registry: Registry) -> None:
    async def test(stub: pb_grpc.ModelSyncStub) -> None:
        request = pb.FetchArtifactRequest(sha256="a" * 100_000)
        code, message = await status_of(stub.FetchArtifact(request).read())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(message) < 300, message

    run(test, registry)
