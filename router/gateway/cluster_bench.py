"""Benchmark: the capacity of one Triton replica and of one router gateway, for sizing.

Capacity is the highest request rate whose p99 latency stays within a target with no error,
found by an open-loop ramp: requests are sent on a clock (each one's latency counted from when
it was due, so a server that falls behind is charged for the wait), the rate doubled until the
target is missed twice in a row, then bisected twice between the last rate that held and the
first that did not; the paths take turns at each rate. Three paths, one Triton and one gateway
in front of it: an escalation (single-image ModelInfer) straight to Triton, the same through
the gateway, and ServerReady through the gateway (HAProxy's forwarding with almost no work
behind it: the gateway's own ceiling, or the load generator's when that is lower).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from edgecascade.cloud.build import datasets
from edgecascade.cloud.common.manifest import INPUT_NAME, Manifest
from edgecascade.cloud.common.paths import family_dir, manifest_path
from edgecascade.cloud.common.preprocessing import prepare
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.router.gateway.process import GatewayProcess

START_RATE = 25.0  # requests per second
MAX_RATE = 6400.0
BISECTIONS = 2
UTILIZATION = 0.7  # sizing: run each replica and gateway at most this close to its capacity

Call = Callable[[InferenceServerClient], Awaitable[object]]


async def _step(
    client: InferenceServerClient, call: Call, rate: float, seconds: float
) -> dict[str, float]:
    """`rate` requests per second for `seconds`: p50 and p99 latency (ms) and errors."""
    loop = asyncio.get_running_loop()
    count = max(1, int(rate * seconds))
    start = loop.time() + 0.05
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            await call(client)
            latencies.append(loop.time() - due)
        except InferenceServerException:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    ms = np.asarray(latencies or [math.inf]) * 1e3
    return {
        "rate": rate,
        "p50_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
    }


async def capacities(
    paths: dict[str, tuple[str, Call]], p99_ms: float, seconds: float
) -> dict[str, dict[str, Any]]:
    """Each path's highest rate (url, call) whose p99 stays within `p99_ms` without error, and
    every step measured. The paths ramp together, one after another at each rate (so that a
    busy spell of a shared machine falls on all of them), and a missed step counts only when
    it is missed again right away."""
    clients = {name: PLAINTEXT.triton_aio(url) for name, (url, _) in paths.items()}
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in paths}

    async def holds(name: str, rate: float) -> bool:
        for _ in range(2):
            step = await _step(clients[name], paths[name][1], rate, seconds)
            steps[name].append(step)
            if step["errors"] == 0 and step["p99_ms"] <= p99_ms:
                return True
        return False

    good = dict.fromkeys(paths, 0.0)
    bad: dict[str, float] = {}
    try:
        for name, (_, call) in paths.items():  # warm up: connections, the model
            await _step(clients[name], call, START_RATE, 1.0)
        rate = START_RATE
        while rate <= MAX_RATE and len(bad) < len(paths):
            for name in paths:
                if name not in bad:
                    if await holds(name, rate):
                        good[name] = rate
                    else:
                        bad[name] = rate
            rate *= 2
        for name, above in bad.items():
            for _ in range(BISECTIONS if good[name] else 0):
                middle = (good[name] + above) / 2
                if await holds(name, middle):
                    good[name] = middle
                else:
                    above = middle
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
    return {name: {"capacity_rps": good[name], "steps": steps[name]} for name in paths}


def sizing(capacity_rps: float, cameras: int, fps: float, escalation: float) -> int | None:
    """Replicas (or gateways) for `cameras` at `fps` escalating a share `escalation`: the
    escalations per second over UTILIZATION of one's capacity, rounded up (None: no
    capacity was measured)."""
    if capacity_rps <= 0:
        return None
    return max(1, math.ceil(cameras * fps * escalation / (UTILIZATION * capacity_rps)))


def run_cluster_bench(report: Path, p99_ms: float = 20.0, seconds: float = 2.0) -> dict[str, Any]:
    """Measure the three capacities, write the JSON report to `report` and return it."""
    manifest = Manifest.load(manifest_path("fashion"))
    image = prepare(datasets.fashion("test").images[0], manifest.cloud.preprocessing)
    tensor = grpcclient.InferInput(INPUT_NAME, [1, *image.shape], "UINT8")
    tensor.set_data_from_numpy(image[None])
    version = str(manifest.cloud.version)

    async def infer(client: InferenceServerClient) -> object:
        return await client.infer(
            manifest.cloud.name, [tensor], model_version=version, client_timeout=5.0
        )

    async def ready(client: InferenceServerClient) -> object:
        return await client.is_server_ready(client_timeout=5.0)

    with tempfile.TemporaryDirectory(prefix="edgecascade-bench-") as tmp:
        work = Path(tmp)
        write_model(manifest, family_dir("fashion"), work / "repository")
        with (
            TritonServer(work / "repository", log_path=work / "triton.log") as triton,
            GatewayProcess([triton.grpc_url], work / "gateway.log") as gateway,
        ):
            started = time.perf_counter()
            paths: dict[str, tuple[str, Call]] = {
                "triton_infer": (triton.grpc_url, infer),
                "gateway_infer": (gateway.url, infer),
                "gateway_forwarding": (gateway.url, ready),
            }
            found = asyncio.run(capacities(paths, p99_ms, seconds))
    replica, forwarding = found["triton_infer"], found["gateway_forwarding"]
    gateways = sizing(forwarding["capacity_rps"], 1000, 10, 0.12)
    result: dict[str, Any] = {
        "what": "open-loop ramp (requests on a clock, latency from when each was due) of "
        "single-image ModelInfer (fashion cloud model) straight to one Triton and through one "
        "gateway, and of ServerReady through the gateway; capacity = the highest rate with "
        f"p99 <= {p99_ms:g} ms and no error",
        "p99_target_ms": p99_ms,
        "seconds_per_step": seconds,
        "capacity_rps": {name: r["capacity_rps"] for name, r in found.items()},
        "steps": {name: r["steps"] for name, r in found.items()},
        "sizing": {
            "formula": "ceil(cameras * fps * escalation / (utilization * capacity_rps)); "
            "gateways: two at least",
            "utilization": UTILIZATION,
            "example_1000_cameras_10fps_12pct": {
                "triton_replicas": sizing(replica["capacity_rps"], 1000, 10, 0.12),
                "gateways": None if gateways is None else max(2, gateways),  # one may go
            },
        },
        "wall_s": time.perf_counter() - started,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "note": "load generator, Triton and HAProxy share these CPUs",
        },
    }
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2))
    return result
