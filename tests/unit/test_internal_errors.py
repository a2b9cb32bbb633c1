"""The agent's interceptor: a handler's bug is INTERNAL, a request error keeps its status."""

import asyncio

import grpc
import pytest

from edgecascade.cloud.common.errors import NotFound
from edgecascade.cloud.common.transport import PLAINTEXT, Transport
from edgecascade.edge.serving.rpc import InternalErrors

pytestmark = pytest.mark.integration  # loopback gRPC servers


async def _call(method: str, streaming: bool = False) -> tuple[grpc.StatusCode, str]:
    async def key_error(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return {}["missing"]

    async def not_found(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise NotFound("no model 'x'")

    async def index_error_stream(request: bytes, context: grpc.aio.ServicerContext):
        yield b"one"
        raise IndexError("list index out of range")

    handlers = {
        "KeyError": grpc.unary_unary_rpc_method_handler(key_error),
        "NotFound": grpc.unary_unary_rpc_method_handler(not_found),
        "Stream": grpc.unary_stream_rpc_method_handler(index_error_stream),
    }
    server = Transport(server_interceptors=(InternalErrors(),)).server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.T", handlers),))
    address = f"127.0.0.1:{PLAINTEXT.listen(server, '127.0.0.1:0')}"
    await server.start()
    try:
        async with PLAINTEXT.aio_channel(address) as channel:
            try:
                if streaming:
                    call = channel.unary_stream(f"/test.T/{method}")(b"", timeout=5)
                    assert [r async for r in call] == [b"one"]
                else:
                    await channel.unary_unary(f"/test.T/{method}")(b"", timeout=5)
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details() or ""
        return grpc.StatusCode.OK, ""
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("method", "streaming", "code", "detail"),
    [
        ("KeyError", False, grpc.StatusCode.INTERNAL, "KeyError"),
        ("NotFound", False, grpc.StatusCode.NOT_FOUND, "no model 'x'"),
        ("Stream", True, grpc.StatusCode.INTERNAL, "IndexError"),
    ],
)
def test_status_of_what_a_handler_raises(
    method: str, streaming: bool, code: grpc.StatusCode, detail: str
) -> None:
    got, details = asyncio.run(_call(method, streaming))
    assert got == code
    assert detail in details
