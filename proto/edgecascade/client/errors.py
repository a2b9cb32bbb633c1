"""The one exception of the client: a failed call, or a stream's frame that failed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from edgecascade.v1 import cascade_pb2 as pb

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class CascadeError(Exception):
    """The gRPC status `code` and the server's `message`, as tritonclient's
    InferenceServerException carries them."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code.name}] {self.message}"

    @classmethod
    def from_frame(cls, error: pb.Error) -> CascadeError:
        """From a stream frame's `error` (a google.rpc.Code number and its message)."""
        return cls(_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message)


@contextmanager
def rpc_failures() -> Iterator[None]:
    """The grpc.RpcError of a blocking or an asyncio call inside, raised as a CascadeError."""
    try:
        yield
    except grpc.RpcError as e:
        raise CascadeError(e.code(), e.details() or "") from None
