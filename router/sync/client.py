"""The client side of ModelSync (grpc.aio): manifests, change watching, artifact downloads.

Downloads go to ``<dest>.partial`` first and resume from its size after a broken stream
(tenacity retries with backoff); the file moves to `dest` only when its sha256 matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import grpc
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from edgecascade.cloud.common.manifest import Manifest, artifact_path, sha256_file
from edgecascade.cloud.common.signing import SignatureError, TrustedKeys, verify_json
from edgecascade.v1 import model_sync_pb2 as pb
from edgecascade.v1 import model_sync_pb2_grpc as pb_grpc

# Worth another try: the server or the network went away, or the stream broke off.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
    }
)
MAX_BACKOFF_S = 5.0


class ArtifactError(RuntimeError):
    """A download that cannot succeed: the bytes received do not hash to the sha256 asked for."""


class InvalidManifest(ArtifactError):
    """A manifest that must not be applied: it does not hash as announced, or does not parse
    (e.g. an artifact name that would lead outside the folder it is downloaded to)."""

    def __init__(self, family: str, version: int, reason: str) -> None:
        super().__init__(f"{family} v{version}: manifest refused: {reason}")
        self.family, self.version, self.reason = family, version, reason


class _Incomplete(Exception):
    """The stream ended before the last byte, or a partial file was longer than the artifact."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in RETRYABLE
    return isinstance(exc, _Incomplete)


async def fetch_artifact(
    stub: pb_grpc.ModelSyncStub,
    sha256: str,
    dest: Path,
    *,
    attempts: int = 5,
    timeout_s: float = 300.0,
) -> Path:
    """Download artifact `sha256` to `dest` (kept when it already hashes right); return `dest`.

    Raises grpc.aio.AioRpcError for what retrying cannot fix (NOT_FOUND, DATA_LOSS, ...) or
    once `attempts` are spent, and ArtifactError when the bytes hash to something else.
    """
    dest = Path(dest)
    if dest.is_file() and await asyncio.to_thread(sha256_file, dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.1, max=MAX_BACKOFF_S),
        reraise=True,
    ):
        with attempt:
            await _download(stub, sha256, partial, timeout_s)
    actual = await asyncio.to_thread(sha256_file, partial)
    if actual != sha256:
        partial.unlink()
        raise ArtifactError(f"downloaded {dest.name} hashes to {actual}, expected {sha256}")
    os.replace(partial, dest)
    return dest


async def _download(
    stub: pb_grpc.ModelSyncStub, sha256: str, partial: Path, timeout_s: float
) -> None:
    """Append the rest of the artifact to `partial`, from its current size."""
    offset = partial.stat().st_size if partial.exists() else 0
    total = None
    with open(partial, "ab") as out:  # noqa: ASYNC230 - a local file, written chunk by chunk
        request = pb.FetchArtifactRequest(sha256=sha256, offset=offset)
        try:
            async for chunk in stub.FetchArtifact(request, timeout=timeout_s):
                if chunk.offset != offset:
                    raise _Incomplete(f"chunk at offset {chunk.offset}, expected {offset}")
                out.write(chunk.data)
                offset += len(chunk.data)
                total = chunk.total_size
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.OUT_OF_RANGE:
                raise
            out.truncate(0)  # longer than the artifact: not a prefix of it, start over
            raise _Incomplete(exc.details()) from exc
    if total is None or offset != total:
        raise _Incomplete(f"stream ended at byte {offset} of {total}")


async def fetch_manifest_files(
    stub: pb_grpc.ModelSyncStub,
    manifest: Manifest,
    folder: Path,
    *,
    attempts: int = 5,
    timeout_s: float = 300.0,
) -> Path:
    """Download every artifact of `manifest` into `folder` (as a family folder), verify the
    whole pair and write its manifest.json there; return `folder`."""
    folder = Path(folder)
    files = {**manifest.edge.files, **manifest.cloud.files}
    targets = {rel: artifact_path(folder, rel) for rel in files}  # all checked before any write
    for rel, sha in files.items():
        await fetch_artifact(stub, sha, targets[rel], attempts=attempts, timeout_s=timeout_s)
    await asyncio.to_thread(manifest.verify, folder)
    manifest.save(folder / "manifest.json")
    return folder


async def get_manifest(
    stub: pb_grpc.ModelSyncStub,
    family: str,
    version: int = 0,
    *,
    trusted: TrustedKeys | None = None,
    timeout_s: float = 10.0,
) -> Manifest:
    """Version `version` of `family`'s manifest (0: the current one), signed by a `trusted`
    key (None: signatures are not checked); InvalidManifest otherwise."""
    request = pb.GetManifestRequest(family=family, version=version)
    return _manifest(await stub.GetManifest(request, timeout=timeout_s), trusted)


async def watch_manifests(
    stub: pb_grpc.ModelSyncStub,
    family: str,
    after_version: int = 0,
    on_invalid: Callable[[InvalidManifest], None] | None = None,
    *,
    trusted: TrustedKeys | None = None,
) -> AsyncGenerator[Manifest, None]:
    """The family's current manifest whenever it changes (not `after_version`), for ever.
    Each must be signed by a `trusted` key (None: signatures are not checked).

    A dropped stream is opened again (backoff up to MAX_BACKOFF_S), after the last version seen.
    A manifest that is not valid raises InvalidManifest, or with `on_invalid` is handed to it
    and skipped (watching goes on).
    """
    last, failures = after_version, 0
    while True:
        request = pb.WatchManifestsRequest(family=family, after_version=last)
        try:
            async for response in stub.WatchManifests(request):
                try:
                    manifest = _manifest(response, trusted)
                except InvalidManifest as exc:
                    if on_invalid is None:
                        raise
                    last, failures = response.version, 0
                    on_invalid(exc)
                    continue
                last, failures = manifest.version, 0
                yield manifest
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
        failures += 1
        await asyncio.sleep(min(0.1 * 2**failures, MAX_BACKOFF_S))


def _manifest(response: pb.ManifestResponse, trusted: TrustedKeys | None) -> Manifest:
    """The manifest in `response`, its signature checked against `trusted` (unless None) before
    anything else in it is looked at; InvalidManifest saying why it is refused."""
    digest = hashlib.sha256(response.manifest_json.encode()).hexdigest()
    if digest != response.manifest_sha256:
        raise InvalidManifest(response.family, response.version, "manifest sha256 mismatch")
    try:
        manifest = (
            Manifest.model_validate_json(response.manifest_json)
            if trusted is None
            else verify_json(response.manifest_json, trusted)
        )
    except SignatureError as exc:
        raise InvalidManifest(response.family, response.version, str(exc)) from None
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidManifest(response.family, response.version, reasons[:1000]) from None
    if manifest.family != response.family or manifest.version != response.version:
        raise InvalidManifest(
            response.family,
            response.version,
            f"the manifest says {manifest.family} v{manifest.version}",
        )
    return manifest
