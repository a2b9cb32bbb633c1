"""Benchmark: what the router gateway adds to an escalation, measured side by side.

One Triton server (fashion family) and one gateway in front of it, each a child process. The
same single-image ModelInfer, made with the edge's own CloudClient, goes alternately straight
to Triton and through the gateway, one call in flight, the order swapped every pair so that
drift on a shared machine lands on both sides alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.build import datasets
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import family_dir, manifest_path
from edgecascade.cloud.common.preprocessing import prepare
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.router.cascade.cloud_client import CloudClient
from edgecascade.router.gateway.process import GatewayProcess

GOAL_MS = 1.0


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50": float(np.median(ms)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
    }


async def _measure(
    urls: dict[str, str], manifest: Manifest, image: NDArray[np.uint8], calls: int, warmup: int
) -> dict[str, list[float]]:
    clients = {name: CloudClient(url, manifest.cloud) for name, url in urls.items()}
    times: dict[str, list[float]] = {name: [] for name in clients}
    order = list(clients)
    try:
        for i in range(warmup + calls):
            for name in order if i % 2 else order[::-1]:
                start = time.perf_counter()
                await clients[name].infer(image, timeout_s=5.0)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
    return times


def run_bench(report: Path, calls: int = 3000, warmup: int = 200) -> dict[str, Any]:
    """Measure, write the JSON report to `report` and return it."""
    manifest = Manifest.load(manifest_path("fashion"))
    image = prepare(datasets.fashion("test").images[0], manifest.cloud.preprocessing)
    with tempfile.TemporaryDirectory(prefix="edgecascade-bench-") as tmp:
        work = Path(tmp)
        repository = work / "repository"
        write_model(manifest, family_dir("fashion"), repository)
        with (
            TritonServer(repository, log_path=work / "triton.log") as triton,
            GatewayProcess([triton.grpc_url], work / "gateway.log") as gateway,
        ):
            urls = {"direct": triton.grpc_url, "gateway": gateway.url}
            times = asyncio.run(_measure(urls, manifest, image, calls, warmup))
    direct, via = _stats(times["direct"]), _stats(times["gateway"])
    paired = np.asarray(times["gateway"]) - np.asarray(times["direct"])
    result: dict[str, Any] = {
        "what": "single-image ModelInfer (fashion cloud model), CloudClient, one call in flight, "
        "direct to Triton vs through the router gateway, interleaved",
        "calls_per_path": calls,
        "latency_ms": {"direct": direct, "gateway": via},
        "gateway_added_ms": {
            "p50_difference": via["p50"] - direct["p50"],
            "median_paired_difference": float(np.median(paired) * 1e3),
            "p99_difference": via["p99"] - direct["p99"],
        },
        "goal": {
            "gateway_added_p50_ms_at_most": GOAL_MS,
            "met": via["p50"] - direct["p50"] <= GOAL_MS,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
            "python": platform.python_version(),
        },
    }
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2))
    return result
