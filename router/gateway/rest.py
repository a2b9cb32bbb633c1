"""KServe v2 over HTTP/REST on the gateway, as Triton's port 8000 answers it.

The REST face is the one the edge agent has (cloud.common.kserve_rest), over a servicer that
forwards each call as KServe v2 gRPC to the gateway's own HAProxy, on a unix socket only this
process can open (the gateway's 0700 folder). So a REST call is balanced, retried, counted and
allow-listed as a gRPC one, and Triton is reached over gRPC only: discovery needs no second
port per endpoint. Callers are checked here (bearer token or client certificate, the method's
scope, as HAProxy checks gRPC callers), and HAProxy lets that socket's calls through on that
check. The W3C trace context goes on with the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc

from edgecascade.cloud.common.kserve_rest import Aborted, RestContext
from edgecascade.cloud.common.transport import PLAINTEXT

PASSED_ON = ("traceparent", "tracestate")  # request headers that go on to Triton


class Forwarder:
    """The KServe v2 methods of the REST face, each one gRPC call to HAProxy at `socket`;
    a gRPC error comes back as Aborted (its code, Triton's words)."""

    def __init__(self, socket: Path) -> None:
        self.channel = PLAINTEXT.aio_channel(f"unix:{socket}")
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    async def _call(
        self, method: Callable[..., Awaitable[Any]], request: Message, context: RestContext
    ) -> Any:
        metadata = [(k, v) for k, v in context.invocation_metadata() if k in PASSED_ON]
        try:
            return await method(request, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            raise Aborted(e.code(), e.details() or e.code().name) from None

    async def ServerLive(self, request: kpb.ServerLiveRequest, context: Any) -> Any:
        return await self._call(self._stub.ServerLive, request, context)

    async def ServerReady(self, request: kpb.ServerReadyRequest, context: Any) -> Any:
        return await self._call(self._stub.ServerReady, request, context)

    async def ModelReady(self, request: kpb.ModelReadyRequest, context: Any) -> Any:
        return await self._call(self._stub.ModelReady, request, context)

    async def ServerMetadata(self, request: kpb.ServerMetadataRequest, context: Any) -> Any:
        return await self._call(self._stub.ServerMetadata, request, context)

    async def ModelMetadata(self, request: kpb.ModelMetadataRequest, context: Any) -> Any:
        return await self._call(self._stub.ModelMetadata, request, context)

    async def ModelConfig(self, request: kpb.ModelConfigRequest, context: Any) -> Any:
        return await self._call(self._stub.ModelConfig, request, context)

    async def ModelStatistics(self, request: kpb.ModelStatisticsRequest, context: Any) -> Any:
        return await self._call(self._stub.ModelStatistics, request, context)

    async def RepositoryIndex(self, request: kpb.RepositoryIndexRequest, context: Any) -> Any:
        return await self._call(self._stub.RepositoryIndex, request, context)

    async def LogSettings(self, request: kpb.LogSettingsRequest, context: Any) -> Any:
        return await self._call(self._stub.LogSettings, request, context)

    async def TraceSetting(self, request: kpb.TraceSettingRequest, context: Any) -> Any:
        return await self._call(self._stub.TraceSetting, request, context)

    async def ModelInfer(self, request: kpb.ModelInferRequest, context: Any) -> Any:
        return await self._call(self._stub.ModelInfer, request, context)

    async def close(self) -> None:
        await self.channel.close()
