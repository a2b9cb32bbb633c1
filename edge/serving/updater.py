"""Follow the cloud's manifests for this agent's family and swap new pairs in.

Each new manifest is downloaded from ModelSync into `<artifacts>/edge-cache/<family>/<version>`
(resumable, every sha256 checked), compiled and warmed up off the request path, then swapped in
atomically (EdgeAgent.activate). A pair that fails any step is not swapped in: the serving pair
stays. A version seen before (a rollback in the registry) is reused from the cache. A manifest
that is not signed by a trusted key, or does not validate (one whose artifact names would lead
outside the cache, for one), is refused before any file is written. The follower never stops:
ModelSync unreachable or not knowing the family yet (NOT_FOUND) is retried with back-off. Every
failure is in `update_error`, a log line and the `edgecascade_update_failures` metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import grpc
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.edge.serving.agent import EdgeAgent
from edgecascade.edge.serving.security import cloud_transport, trusted_keys
from edgecascade.edge.serving.settings import EdgeSettings
from edgecascade.router.sync.client import (
    MAX_BACKOFF_S,
    InvalidManifest,
    fetch_manifest_files,
    get_manifest,
    watch_manifests,
)
from edgecascade.v1 import model_sync_pb2_grpc as sync_grpc

log = logging.getLogger(__name__)


def cache_dir(settings: EdgeSettings) -> Path:
    return settings.artifacts / "edge-cache" / settings.family


async def fetch_current(settings: EdgeSettings, sync_url: str) -> Path:
    """Download the family's current pair (an agent with nothing built locally starts so); a
    UserError when there is none to be had."""
    try:
        async with cloud_transport(settings).aio_channel(sync_url) as channel:
            stub = sync_grpc.ModelSyncStub(channel)
            manifest = await get_manifest(stub, settings.family, trusted=trusted_keys(settings))
            return await fetch_manifest_files(
                stub, manifest, cache_dir(settings) / str(manifest.version)
            )
    except (grpc.aio.AioRpcError, InvalidManifest) as e:
        raise UserError(
            f"nothing to serve: {settings.family!r} is not built under {settings.artifacts} and "
            f"its current pair cannot be had from ModelSync {sync_url} ({_failure(e)})"
        ) from None


def _failure(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, InvalidManifest):
        return str(error)
    return f"{type(error).__name__}: {error}"


async def follow(agent: EdgeAgent, sync_url: str, max_backoff_s: float = MAX_BACKOFF_S) -> None:
    """Apply every manifest change the ModelSync service at `sync_url` announces, for ever;
    when watching fails, say why and watch again after a back-off (up to `max_backoff_s`)."""

    def report(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        error = state.outcome.exception()
        assert error is not None
        agent.update_failed(
            "watch",
            f"watching ModelSync {sync_url} for {agent.settings.family!r} failed "
            f"({_failure(error)}); again in {state.next_action.sleep:.1f}s",
        )

    async with agent.transport.aio_channel(sync_url) as channel:
        stub = sync_grpc.ModelSyncStub(channel)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.2, max=max_backoff_s),
            before_sleep=report,
        ):
            with attempt:
                await _watch(agent, stub)


async def _watch(agent: EdgeAgent, stub: sync_grpc.ModelSyncStub) -> None:
    def refused(exc: InvalidManifest) -> None:
        agent.update_failed("refused", str(exc))

    family = agent.settings.family
    watched = watch_manifests(stub, family, agent.manifest.version, refused, trusted=agent.trusted)
    async for manifest in watched:
        if manifest != agent.manifest:
            await update(agent, stub, manifest)


async def update(agent: EdgeAgent, stub: sync_grpc.ModelSyncStub, manifest: Manifest) -> None:
    """Download, verify and swap in `manifest`'s pair; a failure is reported (update_failed),
    not raised."""
    if manifest.family != agent.settings.family:
        agent.update_failed(
            "refused",
            f"v{manifest.version}: manifest refused: it is for family {manifest.family!r}, "
            f"this agent serves {agent.settings.family!r}",
        )
        return
    folder = cache_dir(agent.settings) / str(manifest.version)
    log.info("manifest v%d announced: fetching into %s", manifest.version, folder)
    try:
        await fetch_manifest_files(stub, manifest, folder)
    except ValueError as e:  # an artifact name that leads out of the cache: nothing written
        agent.update_failed("refused", f"v{manifest.version}: manifest refused: {e}")
        return
    except Exception as e:  # noqa: BLE001 - reported; the serving pair stays
        agent.update_failed("download", f"v{manifest.version}: download failed: {_failure(e)}")
        return
    with contextlib.suppress(Exception):  # activate() reported it; the serving pair stays
        await agent.activate(folder)


def start(agent: EdgeAgent, sync_url: str) -> asyncio.Task[None]:
    return asyncio.create_task(follow(agent, sync_url), name="model-sync")
