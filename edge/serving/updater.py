"""Follow the cloud's manifests for this agent's family and swap new pairs in.

Each new manifest is downloaded from ModelSync into `<artifacts>/edge-cache/<family>/<version>`
(resumable, every sha256 checked), compiled and warmed up off the request path, then swapped in
atomically (EdgeAgent.activate). A pair that fails any step is not swapped in: the serving pair
stays. A version seen before (a rollback in the registry) is reused from the cache. A manifest
that does not validate (one whose artifact names would lead outside the cache, for one) is
refused before any file is written; `update_error` says why.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.edge.serving.agent import EdgeAgent, EdgeSettings
from edgecascade.router.sync.client import (
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

        def refused(exc: InvalidManifest) -> None:
            agent.update_error = str(exc)
            log.error("%s", exc)

        family = agent.settings.family
        async for manifest in watch_manifests(stub, family, agent.manifest.version, refused):
            if manifest == agent.manifest:
                continue
            try:
                await update(agent, stub, manifest)
            except Exception:  # noqa: BLE001 - reported by activate(); keep following
                log.exception("manifest v%d not applied", manifest.version)


async def update(agent: EdgeAgent, stub: sync_grpc.ModelSyncStub, manifest: Manifest) -> None:
    if manifest.family != agent.settings.family:
        agent.update_error = (
            f"v{manifest.version}: manifest refused: it is for family {manifest.family!r}, "
            f"this agent serves {agent.settings.family!r}"
        )
        raise InvalidManifest(manifest.family, manifest.version, agent.update_error)
    folder = cache_dir(agent.settings) / str(manifest.version)
    log.info("manifest v%d announced: fetching into %s", manifest.version, folder)
    try:
        await fetch_manifest_files(stub, manifest, folder)
    except ValueError as e:  # an artifact name that leads out of the cache: nothing written
        agent.update_error = f"v{manifest.version}: manifest refused: {e}"
        raise
    except Exception as e:
        agent.update_error = f"v{manifest.version}: download failed: {e}"
        raise
    await agent.activate(folder)


def start(agent: EdgeAgent, sync_url: str) -> asyncio.Task[None]:
    return asyncio.create_task(follow(agent, sync_url), name="model-sync")
