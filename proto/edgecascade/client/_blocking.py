"""The blocking client."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType

from edgecascade.client import _calls
from edgecascade.client._calls import Image, Requests
from edgecascade.client.errors import rpc_failures
from edgecascade.client.results import ClassifyResult, Status, classify_result, status
from edgecascade.client.stream import classify_stream
from edgecascade.cloud.common.transport import Tls
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc


class CascadeClient:
    """A client of one edge agent's Cascade service at `address` (HOST:PORT), over TLS when
    `tls` is given, sending `authorization: Bearer <token>` when `token` is. Every call takes
    `client_timeout` in seconds and raises CascadeError when it fails."""

    def __init__(self, address: str, *, tls: Tls | None = None, token: str | None = None) -> None:
        self._channel = _calls.transport(tls, token).channel(address)
        self._stub = pb_grpc.CascadeStub(self._channel)

    def classify(
        self,
        image: Image,
        *,
        top_k: int = 0,
        deadline_ms: float | None = None,
        request_id: str = "",
        client_timeout: float | None = None,
    ) -> ClassifyResult:
        """One image's answer. `top_k` 0: the agent's default; `deadline_ms`: the latency
        budget inside the agent; `request_id` "": the agent makes one up."""
        request = _calls.request(image, top_k=top_k, deadline_ms=deadline_ms, request_id=request_id)
        with rpc_failures():
            response = self._stub.Classify(request, timeout=_calls.timeout(client_timeout))
        return classify_result(response)

    def classify_stream(
        self,
        images: Iterable[Image],
        *,
        window: int = 8,
        top_k: int = 0,
        deadline_ms: float | None = None,
        client_timeout: float | None = None,
    ) -> Iterator[ClassifyResult]:
        """The answers to `images`, in order, through one ClassifyStream call with at most
        `window` frames awaiting an answer. A frame the agent cannot answer gives a result with
        `error`, and the stream goes on; `client_timeout` bounds the whole stream. An image
        that fails the argument checks raises after the answers to the images before it."""
        make = _calls.requests(top_k, deadline_ms)
        return self._answers(images, make, _calls.window(window), _calls.timeout(client_timeout))

    def _answers(
        self, images: Iterable[Image], make: Requests, window: int, timeout: float | None
    ) -> Iterator[ClassifyResult]:
        def call(requests: Iterator[pb.ClassifyRequest]) -> Iterable[pb.ClassifyResponse]:
            return self._stub.ClassifyStream(requests, timeout=timeout)  # type: ignore[no-any-return]

        with rpc_failures():
            for answered in classify_stream(call, images, make, window):
                yield classify_result(answered.response)

    def status(self, *, client_timeout: float | None = None) -> Status:
        with rpc_failures():
            response = self._stub.GetStatus(
                pb.GetStatusRequest(), timeout=_calls.timeout(client_timeout)
            )
        return status(response)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CascadeClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
