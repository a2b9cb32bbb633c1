"""The end-to-end demo: Triton + an edge agent, a camera-like stream, a report."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import artifacts_root, family_dir
from edgecascade.cloud.common.preprocessing import decode_image, prepare
from edgecascade.cloud.common.transport import PLAINTEXT, Transport
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.families import built_family
from edgecascade.edge.tools.process import EdgeProcess, development_security
from edgecascade.edge.tools.samples import Frame, labelled_frames
from edgecascade.edge.tools.stream import classify_stream
from edgecascade.router.cascade.cloud_client import CloudClient
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

console = Console()


@dataclass
class StreamResult:
    responses: list[pb.ClassifyResponse] = field(default_factory=list)
    round_trip_ms: list[float] = field(default_factory=list)


def paced(frames: list[Frame], fps: float) -> Iterator[tuple[int, Frame]]:
    """The frames with their index, each no earlier than a camera at `fps` would have it."""
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        if fps > 0 and (wait := start + i / fps - time.perf_counter()) > 0:
            time.sleep(wait)
        yield i, frame


def stream(
    address: str,
    frames: list[Frame],
    fps: float,
    progress: Progress,
    window: int = 1,
    transport: Transport = PLAINTEXT,
) -> StreamResult:
    """Send the frames through ClassifyStream, paced at `fps` (0: as fast as answered), with
    at most `window` frames awaiting an answer, as a camera with a small buffer would."""
    result = StreamResult()
    task = progress.add_task("frames", total=len(frames))
    with transport.channel(address) as channel:
        answers = classify_stream(
            pb_grpc.CascadeStub(channel).ClassifyStream,
            paced(frames, fps),
            lambda item: pb.ClassifyRequest(
                request_id=str(item[0]), encoded_image=item[1].encoded, top_k=1
            ),
            window,
        )
        with closing(answers):  # interrupted (Ctrl-C): the call and its request thread end
            for answer in answers:
                result.round_trip_ms.append(answer.round_trip_ms)
                result.responses.append(answer.response)
                progress.advance(task)
    return result


async def cloud_only_predictions(
    url: str, manifest: Manifest, frames: list[Frame], transport: Transport = PLAINTEXT
) -> npt.NDArray[np.intp]:
    """The cloud model's top-1 on every frame, straight from Triton (the cloud-only baseline)."""
    client = CloudClient(url, manifest.cloud, transport)
    try:
        images = np.stack(
            [prepare(decode_image(f.encoded), manifest.cloud.preprocessing) for f in frames]
        )
        batches = [
            await client.infer_batch(images[i : i + 64], timeout_s=30.0)
            for i in range(0, len(images), 64)
        ]
    finally:
        await client.close()
    top1: npt.NDArray[np.intp] = np.concatenate(batches).argmax(-1)
    return top1


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def build_report(
    manifest: Manifest,
    frames: list[Frame],
    result: StreamResult,
    cloud_top1: npt.NDArray[np.intp],
    status: pb.GetStatusResponse,
    in_flight: int,
) -> dict[str, Any]:
    labels = np.array([f.label for f in frames])
    answered = [r for r in result.responses if not r.HasField("error")]
    top1 = np.array([r.top_k[0].class_id for r in answered])
    edge_top1 = np.array([r.edge_class_id for r in answered])
    escalated = [r for r in answered if r.tier == pb.CLOUD]
    return {
        "family": manifest.family,
        "n": len(frames),
        "errors": len(result.responses) - len(answered),
        "accuracy": {
            "edge_only": round(float((edge_top1 == labels).mean()), 4),
            "cloud_only": round(float((cloud_top1 == labels).mean()), 4),
            "cascade": round(float((top1 == labels).mean()), 4),
        },
        "escalation_rate": round(len(escalated) / len(answered), 4),
        "degraded": sum(r.degraded for r in answered),
        "latency_ms": {
            "edge": percentiles([r.timings.edge_ms for r in answered]),
            "cloud": percentiles([r.timings.cloud_ms for r in escalated]),
            "end_to_end": percentiles(result.round_trip_ms),
        },
        "bytes_to_cloud": status.bytes_to_cloud,
        "versions": {"edge": status.versions.edge, "cloud": status.versions.cloud},
        "threshold": round(float(status.threshold), 6),
        "device": status.device,
        "in_flight": in_flight,
        "insecure_hops": list(status.insecure_hops),
    }


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"edgecascade demo: {report['family']}, {report['n']} frames")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for tier, acc in report["accuracy"].items():
        table.add_row(f"accuracy {tier}", f"{acc:.2%}")
    table.add_row(
        "escalation rate", f"{report['escalation_rate']:.1%} at threshold {report['threshold']:.3f}"
    )
    for hop, p in report["latency_ms"].items():
        table.add_row(
            f"latency {hop} (ms)", f"p50 {p['p50']:.2f}  p95 {p['p95']:.2f}  p99 {p['p99']:.2f}"
        )
    table.add_row("bytes to cloud", f"{report['bytes_to_cloud']:,}")
    table.add_row(
        "versions", f"edge {report['versions']['edge']}  cloud {report['versions']['cloud']}"
    )
    table.add_row("degraded / errors", f"{report['degraded']} / {report['errors']}")
    return table


def run_demo(
    family: str,
    limit: int | None,
    threshold: float | None,
    report_path: Path,
    fps: float = 0.0,
    in_flight: int = 1,
    insecure: bool = False,
) -> dict[str, Any]:
    """Start Triton and an edge agent, stream the family's test frames, write the report. Both
    hops run mutual TLS, and the agent checks the client's token, with a CA, certificates and a
    token made for this run (`insecure`: plaintext, no caller check)."""
    folder = family_dir(family)
    manifest = Manifest.load(built_family(family))
    frames = labelled_frames(family, limit)
    logs = report_path.parent / "logs"
    with ExitStack() as stack:
        repository = artifacts_root() / "triton"
        write_model(manifest, folder, repository)
        security = None
        if not insecure:
            security = development_security(Path(stack.enter_context(TemporaryDirectory())))
        with console.status("starting Triton"):
            triton = stack.enter_context(
                TritonServer(
                    repository,
                    log_path=logs / "triton.log",
                    tls=security.triton_tls() if security else None,
                    client_tls=security.cloud_tls() if security else None,
                )
            )
        extra = ["--threshold", str(threshold)] if threshold is not None else []
        cloud = [] if security is None else security.cloud_args()
        with console.status("starting the edge agent"):
            edge = stack.enter_context(
                EdgeProcess(
                    family,
                    triton.grpc_url,
                    logs / "edge.log",
                    *cloud,
                    *extra,
                    security=security,
                    cloud_insecure=security is None,
                )
            )
        hop = "plaintext (--insecure)" if security is None else "mutual TLS on both hops, a token"
        console.print(f"Triton at {triton.grpc_url}, edge agent at {edge.address} ({hop})")
        columns = (
            TextColumn("streaming"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            result = stream(edge.address, frames, fps, progress, in_flight, edge.client)
        with edge.client.channel(edge.address) as channel:
            status = pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest())
        with console.status("cloud-only baseline"):
            cloud_top1 = asyncio.run(
                cloud_only_predictions(triton.grpc_url, manifest, frames, triton.client)
            )
    report = build_report(manifest, frames, result, cloud_top1, status, in_flight)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(summary_table(report))
    console.print(f"report: {report_path}")
    return report
