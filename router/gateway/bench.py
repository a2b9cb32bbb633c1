"""Benchmark: what the router gateway, mutual TLS, its count of gRPC codes and its REST face
add to an escalation, side by side.

Two Triton servers (fashion family), one in plaintext and one requiring mutual TLS, each with
a gateway in front of it speaking the same (plaintext, or mutual TLS from the client and again
to Triton, with a caller file checked by HAProxy). A second plaintext gateway also counts
answers by gRPC code (it serves /metrics) and serves KServe v2 REST. The same single-image
ModelInfer goes alternately over every path (gRPC, and tritonclient.http for REST), one call in
flight, the order rotated every round so that drift on a shared machine lands on every path
alike. Connections are kept, as the edge keeps its own: the handshake is paid once, the
per-call cost of encryption on every call.

What mutual TLS adds is then measured again on its own (`TLS_PATHS`, interleaved the same
way), where each Triton takes half the calls: among the seven paths the plaintext Triton takes
five calls in seven and the mutual-TLS one two, so the latter waits longer between calls and
answers slower for it (straight to Triton, mutual TLS added +0.18 to +0.38 ms among the seven
paths and +0.07 to +0.08 ms among the four, in the same three runs on the same servers).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from numpy.typing import NDArray

from edgecascade.cloud.build import datasets
from edgecascade.cloud.common import certs
from edgecascade.cloud.common.auth import Callers
from edgecascade.cloud.common.manifest import INPUT_NAME, Manifest
from edgecascade.cloud.common.paths import family_dir, manifest_path
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.preprocessing import prepare
from edgecascade.cloud.common.transport import PLAINTEXT, Tls, Transport
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.router.gateway.process import GatewayProcess

GOAL_MS = 1.0  # the gateway's hop, plaintext
TLS_GOAL = 0.10  # mutual TLS adds at most 10% to an escalation's p50 through the gateway
TLS_PATHS = ("direct", "gateway", "direct_mtls", "gateway_mtls")  # each Triton: half the calls


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50": float(np.median(ms)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
    }


Path_ = tuple[str, Transport, str]  # ("grpc" or "http", the client's transport, its URL)


async def _measure(
    paths: dict[str, Path_],
    manifest: Manifest,
    image: NDArray[np.uint8],
    calls: int,
    warmup: int,
) -> dict[str, list[float]]:
    clients = {
        name: t.triton_aio(url) if kind == "grpc" else t.triton_http_aio(url)
        for name, (kind, t, url) in paths.items()
    }
    headers = {name: t.headers for name, (_, t, _) in paths.items()}
    tensors = {"grpc": grpcclient.InferInput(INPUT_NAME, [1, *image.shape], "UINT8")}
    tensors["http"] = httpclient.InferInput(INPUT_NAME, [1, *image.shape], "UINT8")
    for tensor in tensors.values():
        tensor.set_data_from_numpy(image[None])
    version = str(manifest.cloud.version)
    times: dict[str, list[float]] = {name: [] for name in clients}
    order = list(clients)
    try:
        for i in range(warmup + calls):
            shift = i % len(order)
            for name in order[shift:] + order[:shift]:
                kind = paths[name][0]
                timeout = {"client_timeout": 5.0} if kind == "grpc" else {"timeout": 5}
                start = time.perf_counter()
                await clients[name].infer(
                    manifest.cloud.name,
                    [tensors[kind]],
                    model_version=version,
                    headers=headers[name],
                    **timeout,
                )
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
    return times


def _secured(work: Path) -> tuple[Path, Transport, list[str]]:
    """Certificates and a caller for the mutual-TLS paths: (CA folder, the client's transport,
    the gateway's options)."""
    pki = work / "pki"
    certs.init(pki)
    for server in ("triton", "gateway"):
        certs.issue(pki, server)
    for name in ("gateway-client", "edge"):
        certs.issue(pki, name, kind="client")
    callers, token = Callers().with_new_token("edge", ["infer", "status"])
    callers.save(work / "callers.json")
    ca = pki / certs.CA_CERT
    client = Transport(
        tls=Tls(ca, pki / "edge.pem", pki / "edge.key"),
        metadata=(("authorization", f"Bearer {token}"),),
    )
    options = [
        *("--tls-cert", str(pki / "gateway.pem"), "--tls-key", str(pki / "gateway.key")),
        *("--tls-ca", str(ca), "--require-client-cert", "--callers", str(work / "callers.json")),
        *("--triton-ca", str(ca)),
        *("--triton-cert", str(pki / "gateway-client.pem")),
        *("--triton-key", str(pki / "gateway-client.key")),
    ]
    return pki, client, options


def run_bench(report: Path, calls: int = 3000, warmup: int = 200) -> dict[str, Any]:
    """Measure, write the JSON report to `report` and return it."""
    manifest = Manifest.load(manifest_path("fashion"))
    image = prepare(datasets.fashion("test").images[0], manifest.cloud.preprocessing)
    with tempfile.TemporaryDirectory(prefix="edgecascade-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        repository = work / "repository"
        write_model(manifest, family_dir("fashion"), repository)
        pki, client, options = _secured(work)
        ca = pki / certs.CA_CERT
        plain = stack.enter_context(TritonServer(repository, log_path=work / "triton.log"))
        secure = stack.enter_context(
            TritonServer(
                repository,
                log_path=work / "triton-tls.log",
                tls=Tls(ca, pki / "triton.pem", pki / "triton.key", require_client_cert=True),
                client_tls=Tls(ca, pki / "gateway-client.pem", pki / "gateway-client.key"),
            )
        )
        plain_gateway = stack.enter_context(GatewayProcess([plain.grpc_url], work / "gateway.log"))
        faces = stack.enter_context(
            GatewayProcess(
                [plain.grpc_url],
                work / "gateway-faces.log",
                metrics_port=free_port(),
                http_port=free_port(),
            )
        )
        secure_gateway = stack.enter_context(
            GatewayProcess(
                [secure.grpc_url], work / "gateway-tls.log", options=options, client=client
            )
        )
        direct = Transport(tls=Tls(ca, pki / "gateway-client.pem", pki / "gateway-client.key"))
        paths: dict[str, Path_] = {
            "direct": ("grpc", PLAINTEXT, plain.grpc_url),
            "gateway": ("grpc", PLAINTEXT, plain_gateway.url),
            "gateway_counting": ("grpc", PLAINTEXT, faces.url),
            "direct_mtls": ("grpc", direct, secure.grpc_url),
            "gateway_mtls": ("grpc", client, secure_gateway.url),
            "direct_rest": ("http", PLAINTEXT, plain.http_url),
            "gateway_rest": ("http", PLAINTEXT, f"127.0.0.1:{faces.http_port}"),
        }
        times = asyncio.run(_measure(paths, manifest, image, calls, warmup))
        tls_paths = {name: paths[name] for name in TLS_PATHS}
        tls_times = asyncio.run(_measure(tls_paths, manifest, image, calls, warmup))
    stats = {name: _stats(seconds) for name, seconds in times.items()}
    tls_stats = {name: _stats(seconds) for name, seconds in tls_times.items()}

    def added(via: str, base: str, measured: dict[str, list[float]] = times) -> dict[str, float]:
        paired = np.asarray(measured[via]) - np.asarray(measured[base])
        via_ms, base_ms = _stats(measured[via]), _stats(measured[base])
        return {
            "p50_difference": via_ms["p50"] - base_ms["p50"],
            "median_paired_difference": float(np.median(paired) * 1e3),
            "p99_difference": via_ms["p99"] - base_ms["p99"],
        }

    tls_share = tls_stats["gateway_mtls"]["p50"] / tls_stats["gateway"]["p50"] - 1
    result: dict[str, Any] = {
        "what": "single-image ModelInfer (fashion cloud model), tritonclient asyncio, one call "
        "in flight, interleaved over seven paths: straight to Triton and through the router "
        "gateway, in plaintext and with mutual TLS on every hop (the gateway also checking "
        "a bearer token against its caller file); through a gateway that counts answers by "
        "gRPC code; and KServe v2 REST (tritonclient.http.aio, binary tensors) straight to "
        "Triton's HTTP port and through that gateway's REST face; then the four paths of "
        "the mutual-TLS comparison on their own (tls_latency_ms), each Triton taking half "
        "the calls",
        "calls_per_path": calls,
        "latency_ms": stats,
        "tls_latency_ms": tls_stats,
        "gateway_added_ms": added("gateway", "direct"),
        "gateway_added_ms_mtls": added("gateway_mtls", "direct_mtls", tls_times),
        "counting_added_ms": added("gateway_counting", "gateway"),
        "rest": {
            "gateway_added_ms": added("gateway_rest", "direct_rest"),
            "gateway_rest_vs_grpc_ms": added("gateway_rest", "gateway_counting"),
        },
        "mtls_added_ms": {
            "direct": added("direct_mtls", "direct", tls_times),
            "gateway": added("gateway_mtls", "gateway", tls_times),
        },
        "mtls_added_share_of_gateway_p50": tls_share,
        "mtls_added_share_among_seven_paths": (
            stats["gateway_mtls"]["p50"] / stats["gateway"]["p50"] - 1
        ),
        "goal": {
            "gateway_added_p50_ms_at_most": GOAL_MS,
            "met": stats["gateway"]["p50"] - stats["direct"]["p50"] <= GOAL_MS,
            "mtls_added_share_at_most": TLS_GOAL,
            "mtls_met": tls_share <= TLS_GOAL,
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
