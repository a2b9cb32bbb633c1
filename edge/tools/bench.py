"""`edgecascade bench edge`: the edge agent over gRPC against OpenVINO's own benchmark_app on
the same IR (the ceiling), side by side in one run, INT8 and FP32."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import psutil
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import edge_model_file, family_dir
from edgecascade.cloud.common.preprocessing import decode_image, prepare
from edgecascade.cloud.common.transport import PLAINTEXT, Transport
from edgecascade.edge.tools.demo import percentiles
from edgecascade.edge.tools.families import built_family
from edgecascade.edge.tools.process import EdgeProcess, development_security
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

console = Console()
PRECISIONS = ("int8", "fp32")
# KServe ModelInfer runners: raw `pixels` [N, H, W, C], N images per request.
KSERVE_BATCHES = {"agent_kserve_batch": 16, "agent_kserve_batch64": 64}
TLS_ROUNDS = 6  # turns of the plaintext and the mutual-TLS agent, `seconds` shared among them
AGENT_RUNNERS = ("agent_unary", "agent_stream", *KSERVE_BATCHES)
# The agent as it starts by default (one process, LATENCY hint: one OpenVINO stream, dynamic
# batching), and beside it: without dynamic batching (the agent before it), two worker
# processes on the port, and one process with two OpenVINO streams (THROUGHPUT hint).
TWO_STREAMS = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}
SETUPS = {
    "default": [],
    "unbatched": ["--no-dynamic-batching"],
    "workers2": ["--workers", "2"],
    "streams2": ["--plugin-config", json.dumps(TWO_STREAMS)],
}
# a connection of its own for each channel (gRPC shares one among channels to the same address
# by default), so that the kernel spreads the channels among worker processes
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
# the rows that are no agent: the ceiling (OpenVINO alone) and the floor (gRPC alone, per call)
RATIO_LABELS = {"benchmark_app": "ceiling", "echo": "floor"}
BENCHMARK_APP = "import sys; from openvino.tools.benchmark.main import main; sys.exit(main())"
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
# A bare grpc.aio server answering each call with its own bytes: the transport's floor. It
# prints its port, then serves until killed.
ECHO_SERVER = """
import asyncio, sys, grpc
async def echo(request, context):
    return request
async def main():
    server = grpc.aio.server()
    methods = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("Echo", methods)])
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


def _latency_ms(output: str, label: str) -> float:
    match = re.search(rf"{label}:\s+([\d.]+)\s+(us|ms|s)\b", output)
    if not match:
        raise RuntimeError(f"benchmark_app printed no {label!r} latency:\n{output[-2000:]}")
    return float(match[1]) * _UNITS_MS[match[2]]


def benchmark_app(model_xml: Path, shape: list[int], hint: str, seconds: float) -> dict[str, Any]:
    """OpenVINO's benchmark_app at batch 1: images/s and latency p50 (one run) and p99 (a
    second run: it reports one percentile per run); the throughput is the mean of both."""
    runs: dict[int, tuple[float, float]] = {}  # percentile -> (images/s, latency ms)
    cpu_s: dict[int, float] = {}  # percentile -> CPU seconds of that run
    images: dict[int, int] = {}  # percentile -> images (iterations) of that run
    for percentile in (50, 99):
        command = [
            sys.executable, "-c", BENCHMARK_APP, "-m", str(model_xml), "-d", "CPU",
            "-hint", hint.lower(), "-shape", str([1, *shape]).replace(" ", ""),
            "-t", str(max(1, round(seconds / 2))), "-latency_percentile", str(percentile),
        ]  # fmt: skip
        cpu_before = _children_cpu_s()
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
        cpu_s[percentile] = _children_cpu_s() - cpu_before
        if done.returncode != 0:
            raise RuntimeError(f"benchmark_app failed ({done.returncode}):\n{done.stdout[-2000:]}")
        throughput = re.search(r"Throughput:\s+([\d.]+)\s+FPS", done.stdout)
        if not throughput:
            raise RuntimeError(f"benchmark_app printed no throughput:\n{done.stdout[-2000:]}")
        label = "Median" if percentile == 50 else "99 percentile"
        runs[percentile] = (float(throughput[1]), _latency_ms(done.stdout, label))
        count = re.search(r"Count:\s+(\d+)\s+iterations", done.stdout)
        images[percentile] = int(count[1]) if count else 0
    return {
        "images_per_s": round((runs[50][0] + runs[99][0]) / 2, 1),
        "latency_ms": {"p50": round(runs[50][1], 3), "p99": round(runs[99][1], 3)},
        # its whole process (model compilation included) over the images it ran
        "cpu_ms_per_image": round(sum(cpu_s.values()) * 1e3 / max(1, sum(images.values())), 4),
    }


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_s(agent: EdgeProcess) -> float:
    """User + system CPU seconds of the running `agent` so far (all its threads, and its
    worker processes)."""
    if agent.pid is None:
        raise RuntimeError(f"the edge agent exited ({agent.returncode}): see {agent.log_path}")
    parent = psutil.Process(agent.pid)
    processes = [parent, *parent.children(recursive=True)]
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in processes))


def bench_images(manifest: Manifest, count: int = 64) -> NDArray[np.uint8]:
    """Real test images (repeated up to `count`), already at the model's input size."""
    spec = manifest.edge.preprocessing
    frames = labelled_frames(manifest.family, count)
    images = [prepare(decode_image(frames[i % len(frames)].encoded), spec) for i in range(count)]
    return np.stack(images)


def bench_requests(images: NDArray[np.uint8]) -> list[pb.ClassifyRequest]:
    """Raw pixels: no PNG decode in the agent, as benchmark_app has none."""
    return [
        pb.ClassifyRequest(raw_image=pb.RawImage(shape=list(i.shape), data=i.tobytes()), top_k=1)
        for i in images
    ]


def _result(latencies_s: list[float], elapsed_s: float) -> dict[str, Any]:
    return {
        "images_per_s": round(len(latencies_s) / elapsed_s, 1),
        "latency_ms": {
            k: v for k, v in percentiles([t * 1e3 for t in latencies_s]).items() if k != "p95"
        },
        "n": len(latencies_s),
    }


async def unary_load(
    address: str,
    requests: list[pb.ClassifyRequest],
    clients: int,
    seconds: float,
    transport: Transport = PLAINTEXT,
    channels: int = 1,
) -> dict[str, Any]:
    """`clients` concurrent callers, each one Classify at a time, for `seconds`, over
    `channels` connections (callers take them in turn)."""
    latencies: list[float] = []
    async with AsyncExitStack() as stack:
        stubs = []
        for _ in range(channels):
            channel = transport.aio_channel(address, OWN_CONNECTION)
            await stack.enter_async_context(channel)
            stubs.append(pb_grpc.CascadeStub(channel))
            await stubs[-1].Classify(requests[0])  # connected and warm
        end = time.perf_counter() + seconds

        async def client(offset: int) -> None:
            i, stub = offset, stubs[offset % channels]
            while (start := time.perf_counter()) < end:
                await stub.Classify(requests[i % len(requests)])
                latencies.append(time.perf_counter() - start)
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return _result(latencies, time.perf_counter() - started)


async def stream_load(
    address: str,
    requests: list[pb.ClassifyRequest],
    streams: int,
    window: int,
    seconds: float,
    transport: Transport = PLAINTEXT,
) -> dict[str, Any]:
    """`streams` ClassifyStreams, each on its own connection with up to `window` frames
    awaiting an answer."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def one_stream(offset: int) -> None:
        async with transport.aio_channel(address, OWN_CONNECTION) as channel:
            stub = pb_grpc.CascadeStub(channel)
            room = asyncio.Semaphore(window)
            sent: dict[str, float] = {}

            async def frames() -> AsyncIterator[pb.ClassifyRequest]:
                i = offset
                while time.perf_counter() < end:
                    await room.acquire()
                    request = pb.ClassifyRequest()
                    request.CopyFrom(requests[i % len(requests)])
                    request.request_id = str(i)
                    sent[request.request_id] = time.perf_counter()
                    yield request
                    i += 1

            async for response in stub.ClassifyStream(frames()):
                latencies.append(time.perf_counter() - sent.pop(response.request_id))
                room.release()

    started = time.perf_counter()
    await asyncio.gather(*(one_stream(s * 1000003) for s in range(streams)))
    return _result(latencies, time.perf_counter() - started)


async def kserve_batch_load(
    address: str, model: str, images: NDArray[np.uint8], batch: int, clients: int, seconds: float
) -> dict[str, Any]:
    """`clients` concurrent tritonclient callers of the agent's KServe ModelInfer, each on its
    own connection, `batch` images per request; latency is per request, throughput per image."""
    from tritonclient.grpc import InferInput, InferRequestedOutput

    inputs = []
    for start in range(0, len(images) - batch + 1, batch):
        tensor = InferInput("pixels", [batch, *images.shape[1:]], "UINT8")
        tensor.set_data_from_numpy(images[start : start + batch])
        inputs.append(tensor)
    outputs = [InferRequestedOutput("top1")]
    latencies: list[float] = []
    callers = [PLAINTEXT.triton_aio(address, OWN_CONNECTION) for _ in range(clients)]
    try:
        for client in callers:
            await client.infer(model, [inputs[0]], outputs=outputs)  # connected and warm
        end = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            i, client = offset, callers[offset]
            while (start := time.perf_counter()) < end:
                await client.infer(model, [inputs[i % len(inputs)]], outputs=outputs)
                latencies.append(time.perf_counter() - start)
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(clients)))
        result = _result(latencies, time.perf_counter() - started)
    finally:
        await asyncio.gather(*(client.close() for client in callers))
    return result | {"images_per_s": round(result["images_per_s"] * batch, 1), "batch": batch}


async def echo_load(address: str, payload: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent callers of the echo server, each one call at a time."""
    latencies: list[float] = []
    async with PLAINTEXT.aio_channel(address) as channel:
        call = channel.unary_unary("/Echo/Echo")
        await call(payload)  # connected and warm
        end = time.perf_counter() + seconds

        async def client() -> None:
            while (start := time.perf_counter()) < end:
                await call(payload)
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return _result(latencies, time.perf_counter() - started)


def echo_floor(payload: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """The bare grpc.aio echo server's calls/s and CPU time per call under `clients` callers
    sending `payload` (a Classify request's bytes): what any Python gRPC server pays."""
    server = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        address = f"127.0.0.1:{int(server.stdout.readline())}"
        process = psutil.Process(server.pid)
        before = process.cpu_times()
        result = asyncio.run(echo_load(address, payload, clients, seconds))
        after = process.cpu_times()
    finally:
        server.kill()
        server.wait()
    cpu_s = after.user + after.system - before.user - before.system
    return result | {"cpu_ms_per_call": round(cpu_s * 1e3 / max(1, result["n"]), 4)}


def _status(address: str) -> pb.GetStatusResponse:
    with PLAINTEXT.channel(address) as channel:
        status: pb.GetStatusResponse = pb_grpc.CascadeStub(channel).GetStatus(
            pb.GetStatusRequest(), timeout=5.0
        )
        return status


def bench_precision(
    manifest: Manifest,
    precision: str,
    seconds: float,
    clients: int,
    streams: int,
    window: int,
    logs: Path,
) -> dict[str, Any]:
    """benchmark_app, then the agent (unary and streaming) on the same IR."""
    model_xml = edge_model_file(family_dir(manifest.family), precision)
    shape = manifest.edge.input_shape
    row: dict[str, Any] = {"model": str(model_xml.relative_to(family_dir(manifest.family)))}
    with console.status(f"{manifest.family} {precision}: benchmark_app"):
        row["benchmark_app"] = benchmark_app(model_xml, shape, "THROUGHPUT", seconds)
    images = bench_images(manifest)
    requests = bench_requests(images)
    with console.status(f"{manifest.family} {precision}: grpc.aio echo server"):
        row["echo"] = echo_floor(requests[0].SerializeToString(), clients, seconds)
    extra = ["--precision", precision, "--threshold", "0",
             "--max-batch", str(max(KSERVE_BATCHES.values()))]  # fmt: skip
    for setup, flags in SETUPS.items():
        log = logs / f"bench-{manifest.family}-{precision}-{setup}.log"
        with EdgeProcess(manifest.family, None, log, *extra, *flags) as agent:
            _wait_workers(agent, int(flags[1]) if "--workers" in flags else 1)
            runs: dict[str, Any] = {
                runner: _agent_run(agent, runner, manifest, images, requests, clients, streams,
                                   window, seconds, f"{manifest.family} {precision} {setup}")
                for runner in AGENT_RUNNERS
            }  # fmt: skip
            status = _status(agent.address)
            runs["device"] = status.device
        if setup == "default":
            batches = {b.size: b.executions for b in status.batches}
            row.update(runs, escalations=status.escalations, batches=batches)
        else:
            row[setup] = runs
    ceiling = row["benchmark_app"]["images_per_s"]
    for mode in AGENT_RUNNERS:
        for runs in (row, *(row[setup] for setup in SETUPS if setup != "default")):
            runs[mode]["ratio"] = round(runs[mode]["images_per_s"] / ceiling, 3)
    return row


def _wait_workers(agent: EdgeProcess, count: int, timeout_s: float = 120.0) -> None:
    """Until `count` processes of `agent` listen on its port (the first answers before the
    others have loaded their model)."""
    deadline = time.monotonic() + timeout_s
    while _listening(agent) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers not serving after {timeout_s:g}s")
        time.sleep(0.1)


def _listening(agent: EdgeProcess) -> int:
    if agent.pid is None:
        raise RuntimeError(f"the edge agent exited ({agent.returncode}): see {agent.log_path}")
    parent = psutil.Process(agent.pid)
    return sum(
        any(c.status == psutil.CONN_LISTEN and c.laddr.port == agent.port
            for c in process.net_connections("tcp"))
        for process in (parent, *parent.children())
    )  # fmt: skip


def _agent_run(
    agent: EdgeProcess,
    runner: str,
    manifest: Manifest,
    images: NDArray[np.uint8],
    requests: list[pb.ClassifyRequest],
    clients: int,
    streams: int,
    window: int,
    seconds: float,
    label: str,
) -> dict[str, Any]:
    """One runner's load on `agent`, with the agent's own CPU time per image it answered."""
    cpu_before = _cpu_s(agent)
    with console.status(f"{label}: {runner}"):
        if runner == "agent_unary":
            result = asyncio.run(
                unary_load(agent.address, requests, clients, seconds, channels=clients)
            )
        elif runner == "agent_stream":
            result = asyncio.run(stream_load(agent.address, requests, streams, window, seconds))
        else:
            batch = KSERVE_BATCHES[runner]
            result = asyncio.run(
                kserve_batch_load(agent.address, manifest.family, images, batch,
                                  max(1, clients // 4), seconds)
            )  # fmt: skip
    answered = result["n"] * result.get("batch", 1)
    cpu_ms = (_cpu_s(agent) - cpu_before) * 1e3
    return result | {"cpu_ms_per_image": round(cpu_ms / max(1, answered), 4)}


def tls_cost(
    manifest: Manifest, seconds: float, clients: int, streams: int, window: int, logs: Path
) -> dict[str, Any]:
    """The same agent (INT8) serving plaintext and serving mutual TLS with a caller check (a
    token on every call), both running, measured in alternating rounds (unary and streams):
    what TLS costs in throughput and p50 latency, for one client calling in turn (the latency of
    a call), `clients` at once (a saturated agent) and `streams`. Connections are kept, so
    handshakes are rare; the cost is encryption and the token check per call. The two agents
    take turns in `TLS_ROUNDS` short rounds, which of them goes first alternating, and each
    figure is the median of its rounds: on shared cores one process can run 10-20% slower than
    its twin for a few seconds (two runs of two long rounds each once gave 6% and 21%)."""
    requests = bench_requests(bench_images(manifest))
    extra = ["--hint", "THROUGHPUT", "--threshold", "0"]
    rounds = TLS_ROUNDS

    async def load(runner: str, address: str, transport: Transport) -> dict[str, Any]:
        if runner == "stream":
            return await stream_load(
                address, requests, streams, window, seconds / rounds, transport
            )
        callers = 1 if runner == "unary_one_client" else clients
        return await unary_load(address, requests, callers, seconds / rounds, transport)

    loads = ("unary_one_client", "unary", "stream")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        runner: {"plaintext": [], "mutual_tls": []} for runner in loads
    }
    with TemporaryDirectory() as folder, ExitStack() as stack:
        security = development_security(Path(folder))
        agents = {
            "plaintext": stack.enter_context(
                EdgeProcess(manifest.family, None, logs / "bench-tls-plaintext.log", *extra)
            ),
            "mutual_tls": stack.enter_context(
                EdgeProcess(
                    manifest.family, None, logs / "bench-tls-mtls.log", *extra, security=security
                )
            ),
        }
        for turn in range(rounds):
            for runner in loads:
                for mode, agent in list(agents.items())[:: 1 if turn % 2 == 0 else -1]:
                    with console.status(f"TLS cost: {runner}, {mode}"):
                        measured = asyncio.run(load(runner, agent.address, agent.client))
                        results[runner][mode].append(measured)
    report: dict[str, Any] = {"rounds": rounds}
    for runner, by_mode in results.items():
        row: dict[str, Any] = {
            mode: {
                "images_per_s": round(float(np.median([r["images_per_s"] for r in runs])), 1),
                "p50_ms": round(float(np.median([r["latency_ms"]["p50"] for r in runs])), 3),
            }
            for mode, runs in by_mode.items()
        }
        plain, tls = row["plaintext"], row["mutual_tls"]
        row["throughput_cost"] = round(1 - tls["images_per_s"] / plain["images_per_s"], 3)
        row["p50_cost"] = round(tls["p50_ms"] / plain["p50_ms"] - 1, 3)
        report[runner] = row
    return report


def run_bench(
    family: str,
    report_path: Path,
    seconds: float = 5.0,
    clients: int = 16,
    streams: int = 2,
    window: int = 8,
    precisions: tuple[str, ...] = PRECISIONS,
) -> dict[str, Any]:
    """Benchmark every precision of a family's edge model; write and print the report."""
    manifest = Manifest.load(built_family(family))
    logs = report_path.parent / "logs"
    report: dict[str, Any] = {
        "family": family,
        "edge_model": manifest.edge.key,
        "cpus": os.cpu_count(),
        "seconds": seconds,
        "unary_clients": clients,
        "streams": streams,
        "stream_window": window,
        "kserve_batches": KSERVE_BATCHES,
        "input": "raw uint8 pixels at the model's input size",
        # A mirroring policy runs the edge model on each image and its mirror; benchmark_app
        # runs it once per image. Both run every member of an ensemble edge model.
        "edge_inferences_per_image": 2 if manifest.policy.mirror else 1,
        "edge_members": int(manifest.edge.metrics.get("members", 1)),
        "results": {p: bench_precision(manifest, p, seconds, clients, streams, window, logs)
                    for p in precisions},
        "tls": tls_cost(manifest, seconds, clients, streams, window, logs),
    }  # fmt: skip
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(bench_table(report))
    console.print(setups_table(report))
    console.print(tls_table(report["tls"]))
    console.print(f"report: {report_path}")
    return report


def bench_table(report: dict[str, Any]) -> Table:
    views = report["edge_inferences_per_image"]
    table = Table(
        title=f"edge bench: {report['family']} ({report['cpus']} CPUs), the agent runs the model "
        f"{views}x per image"
        + (" (mirroring policy)" if views == 2 else "")
        + (f", an ensemble of {report['edge_members']}" if report["edge_members"] > 1 else "")
    )
    for column in ("precision", "runner", "images/s", "p50 ms", "p99 ms", "vs benchmark_app"):
        table.add_column(column, justify="left" if column in ("precision", "runner") else "right")
    for precision, row in report["results"].items():
        for runner in ("benchmark_app", "echo", *AGENT_RUNNERS):
            r = row[runner]
            ratio = f"{r['ratio']:.0%}" if "ratio" in r else RATIO_LABELS[runner]
            table.add_row(
                precision, runner, f"{r['images_per_s']:,.0f}", f"{r['latency_ms']['p50']:.3f}",
                f"{r['latency_ms']['p99']:.3f}", ratio,
            )  # fmt: skip
    return table


def setups_table(report: dict[str, Any]) -> Table:
    """Every setup of the agent side by side: its share of benchmark_app's images/s and its CPU
    ms per image (per call for the echo server)."""
    table = Table(title="setups side by side: vs benchmark_app (CPU ms per image)")
    for column in ("precision", "runner", *SETUPS):
        table.add_column(column, justify="left" if column in ("precision", "runner") else "right")
    for precision, row in report["results"].items():
        for runner in RATIO_LABELS:
            r = row[runner]
            cpu = f"{r.get('cpu_ms_per_image', r.get('cpu_ms_per_call')):.3f}"
            table.add_row(precision, runner, *(f"({cpu})" for _ in SETUPS))
        for runner in AGENT_RUNNERS:
            runs = [row[runner] if setup == "default" else row[setup][runner] for setup in SETUPS]
            table.add_row(
                precision, runner,
                *(f"{r['ratio']:.0%} ({r['cpu_ms_per_image']:.3f})" for r in runs),
            )  # fmt: skip
    return table


def tls_table(tls: dict[str, Any]) -> Table:
    table = Table(title="plaintext vs mutual TLS + token, same agent, alternating rounds")
    for column in ("runner", "plaintext img/s", "mTLS img/s", "plaintext p50 ms", "mTLS p50 ms",
                   "throughput cost", "p50 cost"):  # fmt: skip
        table.add_column(column, justify="left" if column == "runner" else "right")
    for runner in ("unary_one_client", "unary", "stream"):
        row = tls[runner]
        plain, mtls = row["plaintext"], row["mutual_tls"]
        table.add_row(
            runner, f"{plain['images_per_s']:,.0f}", f"{mtls['images_per_s']:,.0f}",
            f"{plain['p50_ms']:.3f}", f"{mtls['p50_ms']:.3f}",
            f"{row['throughput_cost']:+.1%}", f"{row['p50_cost']:+.1%}",
        )  # fmt: skip
    return table
