"""Follow the cloud's manifests for this agent's family and swap new pairs in.

Each new manifest is downloaded from ModelSync into `<artifacts>/edge-cache/<family>/<version>`
(resumable, every sha256 checked), compiled and warmed up off the request path, then swapped in
atomically (EdgeAgent.activate). A pair that fails any step is not swapped in: the serving pair
stays. A version seen before (a rollback in the registry) is reused from the cache.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cloud.common.transport import PLAINTEXT
from cloud.manifest import Manifest
from edge.agent import EdgeAgent, EdgeSettings
from edgecascade.v1 import model_sync_pb2_grpc as sync_grpc
from router.model_sync_client import fetch_manifest_files, get_manifest, watch_manifests

log = logging.getLogger(__name__)


def cache_dir(settings: EdgeSettings) -> Path:
    return settings.artifacts / "edge-cache" / settings.family


async def fetch_current(settings: EdgeSettings, sync_url: str) -> Path:
    """Download the family's current pair (an agent with nothing built locally starts so)."""
    async with PLAINTEXT.aio_channel(sync_url) as channel:
        stub = sync_grpc.ModelSyncStub(channel)
        manifest = await get_manifest(stub, settings.family)
        return await fetch_manifest_files(
            stub, manifest, cache_dir(settings) / str(manifest.version)
        )


async def follow(agent: EdgeAgent, sync_url: str) -> None:
    """Apply every manifest change the ModelSync service at `sync_url` announces, for ever."""
    async with PLAINTEXT.aio_channel(sync_url) as channel:
        stub = sync_grpc.ModelSyncStub(channel)
        async for manifest in watch_manifests(stub, agent.settings.family, agent.manifest.version):
            if manifest == agent.manifest:
                continue
            try:
                await update(agent, stub, manifest)
            except Exception:  # noqa: BLE001 - reported by activate(); keep following
                log.exception("manifest v%d not applied", manifest.version)


async def update(agent: EdgeAgent, stub: sync_grpc.ModelSyncStub, manifest: Manifest) -> None:
    folder = cache_dir(agent.settings) / str(manifest.version)
    log.info("manifest v%d announced: fetching into %s", manifest.version, folder)
    try:
        await fetch_manifest_files(stub, manifest, folder)
    except Exception as e:
        agent.update_error = f"v{manifest.version}: download failed: {e}"
        raise
    await agent.activate(folder)


def start(agent: EdgeAgent, sync_url: str) -> asyncio.Task:
    return asyncio.create_task(follow(agent, sync_url), name="model-sync")
