"""The edge agent's servers: on gRPC the edgecascade.v1.Cascade API and KServe v2 over the
cascade, with grpc.health.v1, server reflection, limits and a graceful stop; KServe v2 over
HTTP/REST (http_port) and Prometheus /metrics (metrics_port), in the same event loop."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import cv2
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc

from edgecascade.cloud.common import asgi, kserve_rest, tracing
from edgecascade.cloud.common.auth import Authorizer
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.preprocessing import Image, InvalidImage, decode_image, raw_image
from edgecascade.cloud.common.transport import Transport
from edgecascade.edge.serving import memory, updater
from edgecascade.edge.serving.agent import EdgeAgent
from edgecascade.edge.serving.kserve import KServeService
from edgecascade.edge.serving.rpc import (
    RequestError,
    abort,
    deadline,
    metadata,
    ordered,
    request_deadline,
)
from edgecascade.edge.serving.security import (
    INSECURE_HOP_TEXT,
    describe_security,
    insecure_hops,
    server_transport,
)
from edgecascade.edge.serving.settings import EdgeSettings
from edgecascade.router.cascade.cascade import Answer
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

TIERS = {"edge": pb.EDGE, "cloud": pb.CLOUD}
SERVICES = (
    pb.DESCRIPTOR.services_by_name["Cascade"].full_name,
    kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


def decode_request(request: pb.ClassifyRequest) -> Image:
    kind = request.WhichOneof("input")
    if kind == "encoded_image":
        return decode_image(request.encoded_image)
    if kind == "raw_image":
        return raw_image(request.raw_image.shape, request.raw_image.data)
    raise InvalidImage("request has no input: set encoded_image (JPEG/PNG) or raw_image")


def versions(pair: Manifest) -> pb.ModelVersions:
    return pb.ModelVersions(family=pair.family, edge=pair.edge.key, cloud=pair.cloud.key)


class CascadeService(pb_grpc.CascadeServicer):
    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent

    async def _answer(
        self, request: pb.ClassifyRequest, deadline: float | None, *, frame: bool = False
    ) -> pb.ClassifyResponse:
        """Raises InvalidInput (a bad budget), InvalidImage or Overloaded (edge.rpc.RequestError).
        `deadline` is the gRPC one; the request's own `deadline_ms` budget applies too. A stream
        `frame` waits for room among the requests in flight instead of being refused."""
        received_at = time.perf_counter()
        deadline = request_deadline(deadline, received_at, request.deadline_ms)
        request_id = request.request_id or uuid.uuid4().hex
        if frame:
            await self.agent.limit.room()

        answers = await self.agent.answer(
            lambda: [decode_request(request)],
            payload_bytes=request.ByteSize(),
            received_at=received_at,
            deadline=deadline,
        )
        answer = answers[0]
        return self._response(request_id, answer, request.top_k, received_at)

    def _response(
        self, request_id: str, answer: Answer, top_k: int, received_at: float
    ) -> pb.ClassifyResponse:
        labels = answer.pair.labels
        k = min(top_k or self.agent.settings.default_top_k, len(labels))
        return pb.ClassifyResponse(
            request_id=request_id,
            top_k=[pb.Prediction(class_id=i, name=labels[i], score=s) for i, s in answer.top_k(k)],
            tier=TIERS[answer.tier],
            edge_confidence=answer.edge_confidence,
            edge_class_id=answer.edge_class_id,
            versions=versions(answer.pair),
            timings=pb.Timings(
                edge_ms=answer.edge_ms,
                cloud_ms=answer.cloud_ms,
                total_ms=(time.perf_counter() - received_at) * 1e3,
            ),
            degraded=answer.degraded,
            degraded_reason=answer.degraded_reason or "",
            degraded_reason_code=answer.degraded_reason_code,
        )

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        with tracing.server_span("Classify", metadata(context)):
            try:
                return await self._answer(request, deadline(context))
            except RequestError as e:
                await abort(context, e.code, str(e))

    async def ClassifyStream(
        self, requests: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        """Frames are answered concurrently (up to stream_window at once), in order; each has
        a span of its own in the stream's trace."""
        carrier = metadata(context)
        window = self.agent.settings.stream_window
        async for response in ordered(requests, lambda r: self._frame(r, carrier), window):
            yield response

    async def _frame(
        self, request: pb.ClassifyRequest, carrier: dict[str, str]
    ) -> pb.ClassifyResponse:
        try:
            with tracing.server_span("ClassifyStream", carrier):
                return await self._answer(request, None, frame=True)
        except RequestError as e:
            return pb.ClassifyResponse(
                request_id=request.request_id,
                versions=versions(self.agent.manifest),
                error=pb.Error(code=e.code.value[0], message=str(e)),
            )

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        agent, counters = self.agent, self.agent.counters
        return pb.GetStatusResponse(
            versions=versions(agent.manifest),
            manifest_version=agent.manifest.version,
            previous_version=agent.previous.version if agent.previous else 0,
            update_error=agent.update_error,
            version_mismatch=agent.cascade.mismatch or "",
            device=agent.model.describe(),
            policy=agent.cascade.policy.label,
            threshold=agent.cascade.policy.threshold,
            cloud_url=agent.settings.cloud_url or "",
            # not while the breaker holds the cloud back or its latest call timed out
            cloud_ready=bool(
                agent.cloud
                and agent.cascade.breaker.state == "closed"
                and not agent.cascade.latency.stalled
                and await agent.cloud.ready()
            ),
            requests=counters.requests,
            escalations=counters.escalations,
            degraded=counters.degraded,
            errors=counters.errors,
            bytes_to_cloud=agent.bytes_to_cloud,
            breaker=agent.cascade.breaker.state,
            cloud_latency_ewma_ms=(agent.cascade.latency.ewma_s or 0.0) * 1e3,
            cloud_latency_p95_ms=(agent.cascade.latency.p95_s or 0.0) * 1e3,
            insecure_hops=insecure_hops(agent.settings),
            audit=agent.audit_status(),
            **agent.upload_status(),
            **batching_status(agent),
        )


def batching_status(agent: EdgeAgent) -> dict[str, Any]:
    """GetStatus' batches and queue_duration_us, from the serving version's statistics."""
    stats = agent.metrics.statistics.serving(str(agent.manifest.version))
    return {
        "batches": [
            pb.BatchCount(size=size, executions=stages["compute_infer"].count)
            for size, stages in sorted(stats.batches.items())
        ],
        "queue_duration_us": stats.stages["queue"].ns // 1000,
    }


@dataclass(frozen=True)
class Worker:
    """One of `count` agent processes sharing the gRPC and REST ports (edge.serving.workers);
    `ready` is called once it serves."""

    index: int
    count: int
    ready: Callable[[], None]


async def _http_faces(
    settings: EdgeSettings,
    agent: EdgeAgent,
    kserve: KServeService,
    transport: Transport,
    shared: bool,
) -> list[asgi.HttpServer]:
    """KServe v2 over REST on http_port (the gRPC port's TLS and caller check; `shared` with
    the other workers) and /metrics on metrics_port (plaintext, as Triton's), each when set."""
    faces = []
    if settings.http_port:
        authorizer = next(
            (i for i in transport.server_interceptors if isinstance(i, Authorizer)), None
        )
        app = kserve_rest.rest_app(kserve, settings.max_message_bytes, authorizer)
        faces.append(
            await asgi.start(
                app, settings.host, settings.http_port, transport.tls, settings.grace_s, shared
            )
        )
    try:
        if settings.metrics_port:
            faces.append(
                await asgi.start(agent.metrics.app(), settings.host, settings.metrics_port)
            )
    except BaseException:
        await asyncio.gather(*(face.close() for face in faces))
        raise
    return faces


async def serve(
    settings: EdgeSettings, stop: asyncio.Event | None = None, worker: Worker | None = None
) -> None:
    """Run the agent until `stop` is set (or forever). Then health turns NOT_SERVING, new calls
    are refused and calls in flight get `grace_s` to finish. A `worker` listens with
    SO_REUSEPORT on ports its parent holds."""
    transport = server_transport(settings)  # certificates and callers checked before loading
    memory.return_freed_memory()  # before any image is decoded
    cv2.setNumThreads(1)  # each cv2 call on its caller's thread: large images keep to their pool
    for hop in insecure_hops(settings):
        log.warning("INSECURE: %s without TLS (explicitly switched off)", INSECURE_HOP_TEXT[hop])
    if settings.allow_unsigned:
        log.warning("INSECURE: manifests are served without checking their signature")
    folder = family_dir(settings.family, settings.artifacts)
    if settings.sync_url and not (folder / "manifest.json").exists():
        folder = await updater.fetch_current(settings, settings.sync_url)
    agent = await EdgeAgent.load(settings, folder)
    if agent.trusted is not None:
        log.info("serving manifests signed by key %s only", ", ".join(sorted(agent.trusted)))
    server = transport.server(shared=worker is not None)
    pb_grpc.add_CascadeServicer_to_server(CascadeService(agent), server)
    kserve = KServeService(agent)
    kpb_grpc.add_GRPCInferenceServiceServicer_to_server(kserve, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", *SERVICES):  # the model is compiled: serving from the first call
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    port = transport.listen(server, address)
    await server.start()
    faces: list[asgi.HttpServer] = []  # the HTTP servers
    following = None
    try:
        faces.extend(await _http_faces(settings, agent, kserve, transport, worker is not None))
        scheme = "https" if transport.tls else "http"
        log.info(
            "edge agent %s serving %s on %s:%d (Cascade, KServe v2, health, reflection; %s), "
            "KServe v2 REST %s, model on %s, cloud %s, metrics %s, event loop %s%s",
            agent.manifest.family,
            agent.manifest.edge.key,
            settings.host,
            port,
            describe_security(settings),
            f"{scheme}://{settings.host}:{settings.http_port}/v2" if settings.http_port else "off",
            agent.model.describe(),
            settings.cloud_url or "disabled",
            f"http://{settings.host}:{settings.metrics_port}/metrics"
            if settings.metrics_port
            else "off",
            type(asyncio.get_running_loop()).__module__.partition(".")[0],  # uvloop, asyncio
            f" (worker {worker.index} of {worker.count})" if worker else "",
        )
        if worker:
            worker.ready()
        following = updater.start(agent, settings.sync_url) if settings.sync_url else None
        await (stop or asyncio.Event()).wait()
    finally:
        if following:
            following.cancel()
        log.info(
            "draining: %d requests in flight, %.1fs grace", agent.limit.current, settings.grace_s
        )
        await health_servicer.enter_graceful_shutdown()
        await asyncio.gather(server.stop(grace=settings.grace_s), *(f.close() for f in faces))
        await agent.deployment.close()
        await agent.feedback.close()  # examples queued at the stop are kept
        log.info("stopped")
