"""The edge agent's gRPC server: the edgecascade.v1.Cascade API over the cascade."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import numpy as np

from cloud.preprocessing import InvalidImage, decode_image, raw_image
from edge.agent import EdgeAgent, EdgeSettings
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from router.cascade import Answer

log = logging.getLogger(__name__)

TIERS = {"edge": pb.EDGE, "cloud": pb.CLOUD}


def decode_request(request: pb.ClassifyRequest) -> np.ndarray:
    kind = request.WhichOneof("input")
    if kind == "encoded_image":
        return decode_image(request.encoded_image)
    if kind == "raw_image":
        return raw_image(request.raw_image.shape, request.raw_image.data)
    raise InvalidImage("request has no input: set encoded_image (JPEG/PNG) or raw_image")


class CascadeService(pb_grpc.CascadeServicer):
    def __init__(self, agent: EdgeAgent):
        self.agent = agent
        manifest = agent.manifest
        self._labels = manifest.labels
        self._versions = pb.ModelVersions(
            family=manifest.family, edge=manifest.edge.key, cloud=manifest.cloud.key
        )

    async def _answer(self, request: pb.ClassifyRequest, deadline: float | None) -> pb.ClassifyResponse:
        """Raises InvalidImage for input that cannot be read."""
        received_at = time.perf_counter()
        request_id = request.request_id or uuid.uuid4().hex
        image = decode_request(request)
        answer = await self.agent.cascade.classify(image, received_at=received_at, deadline=deadline)
        self.agent.counters.record(answer)
        return self._response(request_id, answer, request.top_k, received_at)

    def _response(self, request_id: str, answer: Answer, top_k: int, received_at: float) -> pb.ClassifyResponse:
        k = min(top_k or self.agent.settings.default_top_k, len(self._labels))
        return pb.ClassifyResponse(
            request_id=request_id,
            top_k=[pb.Prediction(class_id=i, name=self._labels[i], score=s) for i, s in answer.top_k(k)],
            tier=TIERS[answer.tier],
            edge_confidence=answer.edge_confidence,
            edge_class_id=answer.edge_class_id,
            versions=self._versions,
            timings=pb.Timings(
                edge_ms=answer.edge_ms,
                cloud_ms=answer.cloud_ms,
                total_ms=(time.perf_counter() - received_at) * 1e3,
            ),
            degraded=answer.degraded,
            degraded_reason=answer.degraded_reason or "",
        )

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.perf_counter() + remaining
        try:
            return await self._answer(request, deadline)
        except InvalidImage as e:
            self.agent.counters.errors += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    async def ClassifyStream(
        self, requests: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        """Frames are answered concurrently (up to stream_window at once), in order."""
        pending: asyncio.Queue[asyncio.Task | None] = asyncio.Queue(self.agent.settings.stream_window)

        async def read() -> None:
            async for request in requests:
                await pending.put(asyncio.create_task(self._frame(request)))
            await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                if task := pending.get_nowait():
                    task.cancel()

    async def _frame(self, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        try:
            return await self._answer(request, None)
        except InvalidImage as e:
            self.agent.counters.errors += 1
            return pb.ClassifyResponse(
                request_id=request.request_id,
                versions=self._versions,
                error=pb.Error(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=str(e)),
            )

    async def GetStatus(self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext) -> pb.GetStatusResponse:
        agent, counters = self.agent, self.agent.counters
        return pb.GetStatusResponse(
            versions=self._versions,
            device=agent.model.describe(),
            policy=agent.cascade.policy.name,
            threshold=agent.cascade.policy.threshold,
            cloud_url=agent.settings.cloud_url or "",
            cloud_ready=bool(agent.cloud and await agent.cloud.ready()),
            requests=counters.requests,
            escalations=counters.escalations,
            degraded=counters.degraded,
            errors=counters.errors,
            bytes_to_cloud=counters.bytes_to_cloud,
        )


async def serve(settings: EdgeSettings, stop: asyncio.Event | None = None) -> None:
    """Run the agent until `stop` is set (or forever); in-flight calls get a grace period."""
    agent = EdgeAgent.load(settings)
    server = grpc.aio.server()
    pb_grpc.add_CascadeServicer_to_server(CascadeService(agent), server)
    address = f"{settings.host}:{settings.port}"
    port = server.add_insecure_port(address)
    await server.start()
    log.info(
        "edge agent %s serving %s on %s:%d, model on %s, cloud %s",
        agent.manifest.family, agent.manifest.edge.key, settings.host, port,
        agent.model.describe(), settings.cloud_url or "disabled",
    )
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop(grace=5.0)
        if agent.cloud:
            await agent.cloud.close()
