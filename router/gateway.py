"""The router gateway: KServe v2 gRPC in front of one or more Triton endpoints.

Edges call it exactly as they would call Triton. Requests are forwarded as raw bytes (never
parsed) to the healthy endpoint with the fewest requests outstanding; a call that fails with
UNAVAILABLE is retried on another endpoint within the caller's deadline. A background probe
(ServerReady) keeps each endpoint's health current.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2

from cloud.model_sync import add_model_sync
from cloud.registry import Registry
from router.cloud_client import CHANNEL_OPTIONS, MESSAGE_OPTIONS

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# Metadata that belongs to one hop and must not be forwarded.
HOP_METADATA = ("user-agent", "te", "content-type", "grpc-", ":")


@dataclass(eq=False)
class Endpoint:
    """One Triton server: its channel, health and the requests in flight on it."""

    url: str
    channel: grpc.aio.Channel
    healthy: bool = False
    outstanding: int = 0
    unary: dict[str, grpc.aio.UnaryUnaryMultiCallable] = field(default_factory=dict)

    @classmethod
    def open(cls, url: str) -> Endpoint:
        endpoint = cls(url, grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS))
        for method in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
            if not method.client_streaming:
                endpoint.unary[method.name] = endpoint.channel.unary_unary(
                    f"/{SERVICE}/{method.name}"
                )
        return endpoint


class Gateway:
    """Load balancing and failover over `urls`; serve it with `handler()` on a grpc.aio server."""

    def __init__(self, urls: Sequence[str], probe_interval_s: float = 0.5):
        if not urls:
            raise ValueError("the gateway needs at least one Triton endpoint (host:port)")
        self.endpoints = [Endpoint.open(url) for url in urls]
        self.probe_interval_s = probe_interval_s
        self._turn = 0
        self._prober: asyncio.Task | None = None

    async def start(self) -> None:
        """Probe every endpoint once, then keep probing in the background."""
        await self.probe()
        self._prober = asyncio.create_task(self._probe_forever())

    async def close(self) -> None:
        if self._prober:
            self._prober.cancel()
        await asyncio.gather(*(e.channel.close() for e in self.endpoints))

    async def probe(self) -> None:
        await asyncio.gather(*(self._probe(e) for e in self.endpoints))

    async def _probe(self, endpoint: Endpoint) -> None:
        try:
            raw = await endpoint.unary["ServerReady"](b"", timeout=self.probe_interval_s)
            ready = service_pb2.ServerReadyResponse.FromString(raw).ready
        except grpc.aio.AioRpcError:
            ready = False
        self._set_health(endpoint, ready)

    @staticmethod
    def _set_health(endpoint: Endpoint, ready: bool) -> None:
        if ready != endpoint.healthy:
            log.warning("Triton %s is %s", endpoint.url, "ready" if ready else "NOT ready")
        endpoint.healthy = ready

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            await self.probe()

    def pick(self, exclude: set[Endpoint] = frozenset()) -> Endpoint | None:
        """The healthy endpoint with the fewest requests outstanding (ties take turns);
        when none is known healthy, any endpoint not yet tried (health may be stale)."""
        candidates = [e for e in self.endpoints if e not in exclude]
        pool = [e for e in candidates if e.healthy] or candidates
        if not pool:
            return None
        self._turn += 1
        start = self._turn % len(pool)
        return min(pool[start:] + pool[:start], key=lambda e: e.outstanding)

    async def forward(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Send `request` to an endpoint, failing over on UNAVAILABLE within the deadline."""
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        end = None if remaining is None else loop.time() + remaining
        metadata = [
            (k, v) for k, v in context.invocation_metadata() or () if not k.startswith(HOP_METADATA)
        ]
        tried: set[Endpoint] = set()
        errors: list[str] = []
        while (endpoint := self.pick(tried)) is not None:
            tried.add(endpoint)
            timeout = None if end is None else end - loop.time()
            if timeout is not None and timeout <= 0:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed in the gateway"
                )
            endpoint.outstanding += 1
            try:
                return await endpoint.unary[method](request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    await context.abort(e.code(), e.details() or "")
                self._set_health(endpoint, False)  # until the next probe says otherwise
                log.info("%s failed over from %s: %s", method, endpoint.url, e.details())
                errors.append(f"{endpoint.url}: {e.details()}")
            finally:
                endpoint.outstanding -= 1
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "no Triton endpoint could serve the request: " + "; ".join(errors),
        )

    async def server_live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return service_pb2.ServerLiveResponse(live=True).SerializeToString()

    async def server_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ready = any(e.healthy for e in self.endpoints)
        return service_pb2.ServerReadyResponse(ready=ready).SerializeToString()

    async def stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """ModelStreamInfer: one stream, one endpoint (a broken stream is the caller's to retry)."""
        endpoint = self.pick()
        call = endpoint.channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")(
            requests, timeout=context.time_remaining()
        )
        endpoint.outstanding += 1
        try:
            async for response in call:
                yield response
        finally:
            endpoint.outstanding -= 1

    def handler(self) -> grpc.GenericRpcHandler:
        """Every KServe v2 method, with raw bytes in and out."""
        local = {"ServerLive": self.server_live, "ServerReady": self.server_ready}
        handlers = {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.stream_infer)}
        for method in self.endpoints[0].unary:
            behaviour = local.get(method) or self._forwarder(method)
            handlers[method] = grpc.unary_unary_rpc_method_handler(behaviour)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _forwarder(self, method: str):
        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self.forward(method, request, context)

        return forward


async def serve(
    urls: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 8001,
    probe_interval_s: float = 0.5,
    stop: asyncio.Event | None = None,
    registry: Path | None = None,
) -> None:
    """Run the gateway until `stop` is set (or forever); in-flight calls get a grace period.
    With `registry`, edges can also sync their models here (the ModelSync service)."""
    gateway = Gateway(urls, probe_interval_s)
    await gateway.start()
    server = grpc.aio.server(options=MESSAGE_OPTIONS)
    server.add_generic_rpc_handlers((gateway.handler(),))
    if registry is not None:
        add_model_sync(server, Registry(registry))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info(
        "router gateway on %s:%d -> %s",
        host,
        bound,
        ", ".join(f"{e.url} ({'ready' if e.healthy else 'not ready'})" for e in gateway.endpoints),
    )
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop(grace=5.0)
        await gateway.close()
