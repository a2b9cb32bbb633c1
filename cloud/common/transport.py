"""One place where every gRPC server, channel and tritonclient client of the project is built.

Address, credentials (plaintext today), interceptors, message limits, keepalive and per-call
metadata are decided here once, so that TLS, tokens or tracing land in this module only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

# Images can be large: Triton's own message limits.
MAX_MESSAGE_BYTES = 2**31 - 1

ChannelOptions = Sequence[tuple[str, Any]]

# A server that comes back is reconnected to within a second (gRPC's default backoff grows to
# 2 minutes).
FAST_RECONNECT: ChannelOptions = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class PortInUse(OSError):
    """The address a server was told to listen on is taken by another program."""


def message_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def retry_options(service: str, method: str, attempts: int = 2) -> list[tuple[str, Any]]:
    """gRPC's own retry policy: `method` answered UNAVAILABLE is sent again, within the
    caller's deadline (for idempotent calls such as an inference)."""
    policy = {
        "methodConfig": [
            {
                "name": [{"service": service, "method": method}],
                "retryPolicy": {
                    "maxAttempts": attempts,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.05s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(policy))]


@dataclass(frozen=True)
class Transport:
    """How this process speaks gRPC, on the server and the client side.

    `metadata` is sent with every call of every channel built here (for example a token);
    `keepalive_time_ms` pings idle connections so that dead peers are noticed.
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    keepalive_time_ms: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    server_interceptors: tuple[grpc.aio.ServerInterceptor, ...] = field(default=())

    def _options(self, extra: ChannelOptions) -> list[tuple[str, Any]]:
        options = message_options(self.max_message_bytes)
        if self.keepalive_time_ms is not None:
            options.append(("grpc.keepalive_time_ms", self.keepalive_time_ms))
        return [*options, *extra]

    def server(self, options: ChannelOptions = ()) -> grpc.aio.Server:
        """A grpc.aio server; ports are added with `listen`. A port is never shared with
        another process (gRPC would otherwise set SO_REUSEPORT and split the traffic)."""
        return grpc.aio.server(
            interceptors=self.server_interceptors,
            options=[*self._options(options), ("grpc.so_reuseport", 0)],
        )

    def sync_server(self, max_workers: int, options: ChannelOptions = ()) -> grpc.Server:
        """A thread-pool gRPC server (for fakes of other services in tests and tools)."""
        return grpc.server(
            futures.ThreadPoolExecutor(max_workers),
            options=[*self._options(options), ("grpc.so_reuseport", 0)],
        )

    def listen(self, server: grpc.Server | grpc.aio.Server, address: str) -> int:
        """Listen on `address` (HOST:PORT, port 0 = any); the port bound, or PortInUse."""
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio >= 1.56 raises where older ones returned 0
            raise PortInUse(f"cannot listen on {address}: the port is in use ({e})") from e
        if port == 0:
            raise PortInUse(f"cannot listen on {address}: the port is in use")
        return port

    def channel(self, address: str, options: ChannelOptions = ()) -> grpc.Channel:
        """A blocking channel to `address`."""
        channel = grpc.insecure_channel(address, options=self._options(options))
        if self.metadata:
            channel = grpc.intercept_channel(channel, _SyncMetadata(self.metadata))
        return channel

    def aio_channel(self, address: str, options: ChannelOptions = ()) -> grpc.aio.Channel:
        """An asyncio channel to `address` (bound to the running event loop)."""
        interceptors = [_AioMetadata(self.metadata)] if self.metadata else None
        return grpc.aio.insecure_channel(
            address, options=self._options(options), interceptors=interceptors
        )

    def triton(self, url: str, options: ChannelOptions = ()) -> grpcclient.InferenceServerClient:
        """A blocking tritonclient client to a KServe v2 server (Triton, gateway or agent)."""
        return grpcclient.InferenceServerClient(url, channel_args=self._options(options))

    def triton_aio(self, url: str, options: ChannelOptions = ()) -> aioclient.InferenceServerClient:
        """An asyncio tritonclient client (create it inside the loop that uses it)."""
        return aioclient.InferenceServerClient(url, channel_args=self._options(options))

    @property
    def headers(self) -> dict[str, str]:
        """Per-call metadata as tritonclient's `headers`."""
        return dict(self.metadata)


def _with_metadata(details: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
    return details._replace(metadata=(*(details.metadata or ()), *metadata))


class _SyncMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self.metadata = metadata

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), requests)


class _AioMetadata(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self.metadata = metadata

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_metadata(details, self.metadata), request)

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_metadata(details, self.metadata), request)

    async def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return await continuation(_with_metadata(details, self.metadata), requests)

    async def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return await continuation(_with_metadata(details, self.metadata), requests)


PLAINTEXT = Transport()
