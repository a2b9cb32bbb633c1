"""The asyncio client: `CascadeClient` as in `edgecascade.client`, its calls awaited."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType

from edgecascade.client import _calls
from edgecascade.client._calls import Image, Requests
from edgecascade.client.errors import rpc_failures
from edgecascade.client.results import ClassifyResult, Status, classify_result, status
from edgecascade.client.stream import aio_classify_stream
from edgecascade.cloud.common.transport import Tls
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

__all__ = ["CascadeClient"]


class CascadeClient:
    """An asyncio client of one edge agent (see `edgecascade.client.CascadeClient`); create
    it inside the event loop that uses it."""

    def __init__(self, address: str, *, tls: Tls | None = None, token: str | None = None) -> None:
        self._channel = _calls.transport(tls, token).aio_channel(address)
        self._stub = pb_grpc.CascadeStub(self._channel)

    async def classify(
        self,
        image: Image,
        *,
        top_k: int = 0,
        deadline_ms: float | None = None,
        request_id: str = "",
        client_timeout: float | None = None,
    ) -> ClassifyResult:
        request = _calls.request(image, top_k=top_k, deadline_ms=deadline_ms, request_id=request_id)
        with rpc_failures():
            response = await self._stub.Classify(request, timeout=_calls.timeout(client_timeout))
        return classify_result(response)

    def classify_stream(
        self,
        images: Iterable[Image] | AsyncIterable[Image],
        *,
        window: int = 8,
        top_k: int = 0,
        deadline_ms: float | None = None,
        client_timeout: float | None = None,
    ) -> AsyncIterator[ClassifyResult]:
        """The answers to `images` (an iterable or an async iterable), in order; used with
        `async for`."""
        make = _calls.requests(top_k, deadline_ms)
        return self._answers(images, make, _calls.window(window), _calls.timeout(client_timeout))

    async def _answers(
        self,
        images: Iterable[Image] | AsyncIterable[Image],
        make: Requests,
        window: int,
        timeout: float | None,
    ) -> AsyncIterator[ClassifyResult]:
        def call(requests: AsyncIterator[pb.ClassifyRequest]) -> AsyncIterable[pb.ClassifyResponse]:
            return self._stub.ClassifyStream(requests, timeout=timeout)  # type: ignore[no-any-return]

        with rpc_failures():
            async for answered in aio_classify_stream(call, images, make, window):
                yield classify_result(answered.response)

    async def status(self, *, client_timeout: float | None = None) -> Status:
        with rpc_failures():
            response = await self._stub.GetStatus(
                pb.GetStatusRequest(), timeout=_calls.timeout(client_timeout)
            )
        return status(response)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> CascadeClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
