"""Benchmark ModelSync on loopback: FetchArtifact throughput and publish-to-watcher latency.

A throwaway registry holds a family whose cloud "model" is `size_mib` of random bytes (the
registry never parses models). Writes a JSON report with medians.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecascade.cloud.common.manifest import Manifest, Preprocessing, write_family_folder
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.model_sync import CHUNK_BYTES, POLL_INTERVAL_S, add_model_sync
from edgecascade.cloud.registry.store import Registry
from edgecascade.router.sync.client import fetch_artifact, watch_manifests
from edgecascade.v1 import model_sync_pb2 as pb
from edgecascade.v1 import model_sync_pb2_grpc as pb_grpc


def run_bench(report: Path, size_mib: int = 64, repeats: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgecascade-bench-sync-") as tmp:
        result = asyncio.run(_bench(Path(tmp), size_mib, repeats))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2) + "\n")
    return result


async def _bench(tmp: Path, size_mib: int, repeats: int) -> dict[str, Any]:
    source = _family(tmp / "build", size_mib)
    registry = Registry(tmp / "registry")
    manifest = registry.publish("bench", source).manifest
    sha = manifest.cloud.files["cloud/model.onnx"]
    server = PLAINTEXT.server()
    add_model_sync(server, registry)
    port = PLAINTEXT.listen(server, "127.0.0.1:0")
    await server.start()
    try:
        async with PLAINTEXT.aio_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ModelSyncStub(channel)
            stream_s, fetch_s = [], []
            for i in range(repeats):
                start = time.perf_counter()
                async for _ in stub.FetchArtifact(pb.FetchArtifactRequest(sha256=sha)):
                    pass
                stream_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                await fetch_artifact(stub, sha, tmp / f"download-{i}")
                fetch_s.append(time.perf_counter() - start)
            latency_s, rng = [], np.random.default_rng(1)
            watch = watch_manifests(stub, "bench", manifest.version)
            for i in range(repeats):
                waiter = asyncio.ensure_future(anext(watch))
                await asyncio.sleep(rng.uniform(0.05, 0.05 + POLL_INTERVAL_S))  # any poll phase
                _recalibrate(source, 0.1 + 0.01 * i)
                await asyncio.to_thread(registry.publish, "bench", source)
                published = time.perf_counter()
                await waiter
                latency_s.append(time.perf_counter() - published)
            await watch.aclose()
    finally:
        await server.stop(grace=None)
    return {
        "artifact_mib": size_mib,
        "chunk_kib": CHUNK_BYTES // 1024,
        "repeats": repeats,
        "stream_mib_per_s_median": size_mib / statistics.median(stream_s),
        "fetch_artifact_mib_per_s_median": size_mib / statistics.median(fetch_s),
        "fetch_artifact_note": "client writes to disk and verifies the sha256 at the end",
        "poll_interval_ms": POLL_INTERVAL_S * 1000,
        "publish_to_watcher_ms_median": 1000 * statistics.median(latency_s),
        "publish_to_watcher_ms_max": 1000 * max(latency_s),
    }


def _family(folder: Path, size_mib: int) -> Path:
    rng = np.random.default_rng(0)
    files = {"edge/model.bin": rng.bytes(1 << 20), "cloud/model.onnx": rng.bytes(size_mib << 20)}
    pre = Preprocessing(color="gray", size=28, resize_short=28)
    write_family_folder(folder, "bench", files, ["a", "b"], pre)
    return folder


def _recalibrate(folder: Path, threshold: float) -> None:
    manifest = Manifest.load(folder / "manifest.json")
    manifest.policy.threshold = threshold
    manifest.save(folder / "manifest.json")
