"""The ModelSync gRPC service (grpc.aio): edges read manifests, watch for new current versions
and download artifacts from the registry, and upload the examples they collected (kept per
family and edge under the registry, within a quota per edge). Serve it with
`add_model_sync(server, registry)`.

One background task polls the registry's current pointers while anyone watches, so any
process may publish (`edgecascade models publish`) and every watcher hears of it within one
poll interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import NoReturn

import grpc

from edgecascade.cloud.common.example_messages import from_message
from edgecascade.cloud.registry.store import CorruptBlob, NotFound, Registry
from edgecascade.cloud.registry.uploads import DEFAULT_QUOTA_BYTES, QuotaExceeded, ReceivedExamples
from edgecascade.v1 import model_sync_pb2 as pb
from edgecascade.v1 import model_sync_pb2_grpc as pb_grpc

CHUNK_BYTES = 256 * 1024
POLL_INTERVAL_S = 0.2
DRAIN_MAX = 1024  # messages of a refused upload read and dropped before it is aborted


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str
) -> NoReturn:
    """`context.abort(code, details)`, which always raises (grpc.aio.AbortError): typed so,
    since grpc ships no type information."""
    await context.abort(code, details)
    raise AssertionError("grpc.aio.ServicerContext.abort returned")  # it never does


async def _refuse(
    requests: AsyncIterable[pb.UploadedExample],
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    details: str,
) -> NoReturn:
    """Abort an upload once the caller has sent the rest of its batch (at most DRAIN_MAX more
    messages, dropped): aborted while the caller still streams, the call is reset by a proxy in
    between (the gateway's HAProxy), and the caller reads CANCELLED instead of `details`."""
    drained = 0
    async for _ in requests:
        drained += 1
        if drained >= DRAIN_MAX:
            break
    await _abort(context, code, details)


class ModelSyncService(pb_grpc.ModelSyncServicer):
    def __init__(
        self,
        registry: Registry,
        poll_interval_s: float = POLL_INTERVAL_S,
        examples_quota_bytes: int = DEFAULT_QUOTA_BYTES,
    ) -> None:
        self.registry = registry
        self.received = ReceivedExamples(registry.root, examples_quota_bytes)
        self.poll_interval_s = poll_interval_s
        self._current: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._watchers = 0
        self._poller: asyncio.Task[None] | None = None
        self._verified: dict[str, tuple[int, int, int]] = {}  # sha -> (inode, size, mtime_ns)

    async def GetManifest(
        self, request: pb.GetManifestRequest, context: grpc.aio.ServicerContext
    ) -> pb.ManifestResponse:
        try:
            return self._response(request.family, request.version)
        except NotFound as exc:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def WatchManifests(
        self, request: pb.WatchManifestsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ManifestResponse]:
        family, last = request.family, request.after_version
        try:
            self.registry.check_family(family)
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._refresh()
        if family not in self._current:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"family {family!r} has no published version (known: {sorted(self._current)})",
            )
        self._watchers += 1
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll())
        try:
            while True:
                changed = self._changed
                version = self._current.get(family, last)
                if version != last:
                    try:
                        response = self._response(family, version)
                    except ValueError as exc:  # a manifest that leads outside the registry
                        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    yield response
                    last = version
                await changed.wait()
        finally:
            self._watchers -= 1
            if not self._watchers and self._poller is not None:
                self._poller.cancel()
                self._poller = None

    async def FetchArtifact(
        self, request: pb.FetchArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ArtifactChunk]:
        try:
            path = await self._verified_blob(request.sha256)
        except ValueError as exc:
            code = grpc.StatusCode.DATA_LOSS if isinstance(exc, CorruptBlob) else None
            await _abort(context, code or grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        blob = await asyncio.to_thread(open, path, "rb")
        try:
            size = os.fstat(blob.fileno()).st_size
            if request.offset > size:
                await _abort(
                    context,
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"offset {request.offset} is past the end of artifact {request.sha256} "
                    f"({size} bytes)",
                )
            offset = request.offset
            blob.seek(offset)
            while True:  # at least one chunk, so a caller at the end still learns the size
                data = await asyncio.to_thread(blob.read, CHUNK_BYTES)
                yield pb.ArtifactChunk(offset=offset, data=data, total_size=size)
                offset += len(data)
                if offset >= size:
                    return
        finally:
            blob.close()

    async def UploadExamples(
        self,
        request_iterator: AsyncIterable[pb.UploadedExample],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadExamplesResponse:
        kept = duplicates = 0
        edge_id = ""
        async for message in request_iterator:
            number = kept + duplicates + 1
            try:
                if edge_id and message.edge_id != edge_id:
                    raise ValueError(
                        f"edge_id {message.edge_id!r}: the upload began as {edge_id!r}"
                    )
                edge_id = message.edge_id
                self.registry.check_family(message.family)
                example = from_message(message)
                added = await asyncio.to_thread(self.received.keep, edge_id, example)
            except QuotaExceeded as exc:
                code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
                await _refuse(request_iterator, context, code, details)
            except ValueError as exc:
                code, details = grpc.StatusCode.INVALID_ARGUMENT, f"example {number}: {exc}"
                await _refuse(request_iterator, context, code, details)
            kept += added
            duplicates += not added
        return pb.UploadExamplesResponse(
            kept=kept,
            duplicates=duplicates,
            edge_bytes=self.received.used_bytes(edge_id) if edge_id else 0,
            quota_bytes=self.received.quota_bytes,
        )

    def _response(self, family: str, version: int) -> pb.ManifestResponse:
        path = self.registry.manifest_file(family, version)
        text = path.read_text()
        number = int(path.parent.name)
        return pb.ManifestResponse(
            family=family,
            version=number,
            manifest_json=text,
            manifest_sha256=hashlib.sha256(text.encode()).hexdigest(),
            current=self.registry.current_version(family) == number,
        )

    def _refresh(self) -> None:
        """Read the current pointers; wake every watcher when one moved."""
        current = self.registry.current_versions()
        if current != self._current:
            self._current = current
            self._changed.set()
            self._changed = asyncio.Event()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            self._refresh()

    async def _verified_blob(self, sha256: str) -> Path:
        """The blob's path; hashed again only when the file changed since it last verified."""
        path = self.registry.blob_path(sha256)
        try:
            stat = self.registry.inside(path).stat()
        except FileNotFoundError:
            raise NotFound(f"no artifact with sha256 {sha256} in the registry") from None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._verified.get(sha256) != stamp:
            await asyncio.to_thread(self.registry.verify_blob, sha256)
            self._verified[sha256] = stamp
        return path


def add_model_sync(
    server: grpc.aio.Server,
    registry: Registry,
    poll_interval_s: float = POLL_INTERVAL_S,
    examples_quota_bytes: int = DEFAULT_QUOTA_BYTES,
) -> ModelSyncService:
    """Serve ModelSync for `registry` on `server` (before it starts); return the servicer."""
    service = ModelSyncService(registry, poll_interval_s, examples_quota_bytes)
    pb_grpc.add_ModelSyncServicer_to_server(service, server)
    return service
